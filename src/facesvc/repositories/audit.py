"""The audit trail: append and read, per tenant."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import AuditEvent

AUDIT_TABLE: Table = AuditEvent.__table__  # type: ignore[assignment]
AUDIT_COLUMNS = tuple(AUDIT_TABLE.columns)


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, event: AuditEvent) -> None:
        """One row, as a Core INSERT (no unit-of-work flush: the row is never read back)."""
        values = {
            column.key: getattr(event, column.key)
            for column in AUDIT_COLUMNS
            if getattr(event, column.key) is not None
        }
        await self._session.execute(insert(AUDIT_TABLE).values(values))

    async def page(
        self,
        tenant_id: uuid.UUID,
        *,
        limit: int,
        offset: int,
        action: str | None = None,
        user_id: uuid.UUID | None = None,
        since: datetime | None = None,
    ) -> tuple[list[AuditEvent], int]:
        """Newest first."""
        where = [AuditEvent.tenant_id == tenant_id]
        if action is not None:
            where.append(AuditEvent.action == action)
        if user_id is not None:
            where.append(AuditEvent.user_id == user_id)
        if since is not None:
            where.append(AuditEvent.created_at >= since)
        stmt = (
            select(AuditEvent)
            .where(*where)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id)
            .limit(limit)
            .offset(offset)
        )
        rows = list((await self._session.scalars(stmt)).all())
        total = await self._session.scalar(
            select(func.count()).select_from(AuditEvent).where(*where)
        )
        return rows, int(total or 0)
