"""Users of one tenant: create, look up, page through, delete.

Every query is filtered by the repository's tenant: another tenant's users do not exist here.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import Face, User
from facesvc.errors import DuplicateExternalIdError


class UserRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self._session = session
        self.tenant_id = tenant_id

    async def add(
        self,
        name: str,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> User:
        """Insert a user; :class:`DuplicateExternalIdError` if ``external_id`` is taken.

        The insert runs in a SAVEPOINT, so a duplicate leaves the caller's
        transaction (and whatever else it holds) intact.
        """
        user = User(
            tenant_id=self.tenant_id, name=name, external_id=external_id, metadata_=metadata
        )
        try:
            async with self._session.begin_nested():
                self._session.add(user)
        except IntegrityError as exc:
            if external_id is not None and await self._external_id_taken(external_id):
                raise DuplicateExternalIdError(external_id) from exc
            raise
        return user

    async def get(self, user_id: uuid.UUID) -> User | None:
        stmt = select(User).where(User.id == user_id, User.tenant_id == self.tenant_id)
        return (await self._session.scalars(stmt)).one_or_none()

    async def get_by_external_id(self, external_id: str) -> User | None:
        stmt = select(User).where(User.external_id == external_id, User.tenant_id == self.tenant_id)
        return (await self._session.scalars(stmt)).one_or_none()

    async def get_by_name(self, name: str) -> User | None:
        """The earliest-created user with this name (names are not unique)."""
        stmt = (
            select(User)
            .where(User.name == name, User.tenant_id == self.tenant_id)
            .order_by(User.created_at, User.id)
            .limit(1)
        )
        return (await self._session.scalars(stmt)).first()

    async def list_page(self, limit: int, offset: int) -> tuple[list[tuple[User, int]], int]:
        """One page of ``(user, face count)`` in creation order, and the total user count."""
        face_counts = (
            select(Face.user_id, func.count(Face.id).label("n_faces"))
            .group_by(Face.user_id)
            .subquery()
        )
        stmt = (
            select(User, func.coalesce(face_counts.c.n_faces, 0))
            .outerjoin(face_counts, face_counts.c.user_id == User.id)
            .where(User.tenant_id == self.tenant_id)
            .order_by(User.created_at, User.id)
            .limit(limit)
            .offset(offset)
        )
        rows = (await self._session.execute(stmt)).all()
        total = await self._session.scalar(
            select(func.count()).select_from(User).where(User.tenant_id == self.tenant_id)
        )
        return [(user, int(n)) for user, n in rows], int(total or 0)

    async def face_count(self, user_id: uuid.UUID) -> int:
        stmt = select(func.count(Face.id)).where(Face.user_id == user_id)
        return int(await self._session.scalar(stmt) or 0)

    async def delete(self, user: User) -> None:
        """Delete the user; the database cascades the delete to their faces."""
        await self._session.delete(user)
        await self._session.flush()

    async def _external_id_taken(self, external_id: str) -> bool:
        stmt = (
            select(User.id)
            .where(User.external_id == external_id, User.tenant_id == self.tenant_id)
            .limit(1)
        )
        return (await self._session.scalar(stmt)) is not None
