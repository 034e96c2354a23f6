"""Users: create, read, list, delete (their faces go with them)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import User
from facesvc.repositories import errors as repo_errors
from facesvc.repositories.users import UserRepository
from facesvc.services.errors import DuplicateExternalIdError, UserNotFoundError
from facesvc.services.gallery import GallerySync


class UserService:
    def __init__(self, session: AsyncSession, gallery: GallerySync) -> None:
        self.session = session
        self.users = UserRepository(session)
        self.gallery = gallery

    async def create(
        self, name: str, external_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> User:
        try:
            return await self.users.add(name, external_id=external_id, metadata=metadata)
        except repo_errors.DuplicateExternalIdError as exc:
            raise DuplicateExternalIdError(
                f"a user with external_id {external_id!r} already exists"
            ) from exc

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
        await self.users.delete(await self.get(user_id))
        await self.gallery.user_removed(self.session, user_id)
