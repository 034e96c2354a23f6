"""Users: create, read, list, delete (their faces go with them)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.engine import erase_deleted_after_commit
from facesvc.db.models import User
from facesvc.errors import UserNotFoundError
from facesvc.gallery.backend import Gallery
from facesvc.repositories.attempts import LoginAttemptRepository
from facesvc.repositories.users import UserRepository
from facesvc.security.keys import Caller
from facesvc.services.audit import AuditTrail


class UserService:
    """Users of the caller's tenant."""

    def __init__(self, session: AsyncSession, gallery: Gallery, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.users = UserRepository(session, caller.tenant_id)
        self.gallery = gallery
        self.audit = AuditTrail(session, caller)

    async def create(
        self, name: str, external_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> User:
        # DuplicateExternalIdError (409) when external_id is taken
        user = await self.users.add(name, external_id=external_id, metadata=metadata)
        await self.audit.record("user.create", "ok", user_id=user.id)
        return user

    async def get(self, user_id: uuid.UUID) -> User:
        user = await self.users.get(user_id)
        if user is None:
            raise UserNotFoundError(f"no user with id {user_id}")
        return user

    async def by_name(self, name: str) -> User | None:
        return await self.users.get_by_name(name)

    async def face_count(self, user_id: uuid.UUID) -> int:
        return await self.users.face_count(user_id)

    async def list_page(self, limit: int, offset: int) -> tuple[list[tuple[User, int]], int]:
        return await self.users.list_page(limit, offset)

    async def delete(self, user_id: uuid.UUID) -> None:
        """Erase the user: every face (the database cascades) and their lockout counter."""
        await self.users.delete(await self.get(user_id))
        await LoginAttemptRepository(self.session).clear(self.caller.tenant_id, user_id)
        await self.gallery.user_removed(self.session, user_id)
        await self.audit.record("user.delete", "ok", user_id=user_id)
        erase_deleted_after_commit(self.session)
