"""Consecutive failed verifications per (tenant, tried user id), for the lockout."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import LoginAttempts

# Writes as Core statements on the table (no ORM bulk-persistence layer: they sit on every
# verification's path and never load objects).
_TABLE: Table = LoginAttempts.__table__  # type: ignore[assignment]
_COLUMNS = _TABLE.c


class LoginAttemptRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, tenant_id: uuid.UUID, subject_id: uuid.UUID) -> LoginAttempts | None:
        stmt = select(LoginAttempts).where(
            LoginAttempts.tenant_id == tenant_id, LoginAttempts.subject_id == subject_id
        )
        return (await self._session.scalars(stmt)).one_or_none()

    async def begin_attempt(
        self, tenant_id: uuid.UUID, subject_id: uuid.UUID, now: datetime
    ) -> int | None:
        """Count one more attempt unless the id is locked, in one upsert (atomic under
        concurrent attempts on SQLite and PostgreSQL). Returns the attempts in a row so
        far, or None when the id is locked (nothing counted)."""
        dialect = self._session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        values = insert(_TABLE).values(
            tenant_id=tenant_id, subject_id=subject_id, failures=1, updated_at=now
        )
        stmt = values.on_conflict_do_update(
            index_elements=[_COLUMNS.tenant_id, _COLUMNS.subject_id],
            set_={"failures": _COLUMNS.failures + 1, "updated_at": now},
            where=or_(_COLUMNS.locked_until.is_(None), _COLUMNS.locked_until <= now),
        ).returning(_COLUMNS.failures)
        counted = (await self._session.execute(stmt)).scalar_one_or_none()
        return None if counted is None else int(counted)

    async def lock(self, tenant_id: uuid.UUID, subject_id: uuid.UUID, until: datetime) -> None:
        await self._session.execute(
            update(_TABLE)
            .where(_COLUMNS.tenant_id == tenant_id, _COLUMNS.subject_id == subject_id)
            .values(locked_until=until)
        )

    async def clear(self, tenant_id: uuid.UUID, subject_id: uuid.UUID) -> None:
        await self._session.execute(
            delete(_TABLE).where(_COLUMNS.tenant_id == tenant_id, _COLUMNS.subject_id == subject_id)
        )
