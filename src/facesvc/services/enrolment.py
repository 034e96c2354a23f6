"""Enrolment: one photo -> one stored, normalised embedding for a user."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.models import Face as FaceRow
from facesvc.repositories.faces import FaceRepository
from facesvc.repositories.users import UserRepository
from facesvc.services.analysis import FaceAnalysisService
from facesvc.services.errors import FaceNotFoundError, UserNotFoundError
from facesvc.services.gallery import GallerySync


class EnrolmentService:
    def __init__(
        self, session: AsyncSession, analysis: FaceAnalysisService, gallery: GallerySync
    ) -> None:
        self.session = session
        self.gallery = gallery
        self.users = UserRepository(session)
        self.faces = FaceRepository(session)
        self.analysis = analysis

    async def _require_user(self, user_id: uuid.UUID) -> None:
        if await self.users.get(user_id) is None:
            raise UserNotFoundError(f"no user with id {user_id}")

    async def enrol(self, user_id: uuid.UUID, data: bytes) -> FaceRow:
        await self._require_user(user_id)
        primary = await self.analysis.primary_face(data, strict=True)
        box = primary.face.box
        pipeline = self.analysis.pipeline
        face = await self.faces.add(
            user_id,
            primary.embedding,
            model_name=pipeline.embedder_name,
            model_version=pipeline.embedder_version,
            box=(box.x, box.y, box.width, box.height),
            image_size=(primary.width, primary.height),
            detection_score=primary.face.detection.score,
        )
        await self.gallery.face_added(
            self.session, face.id, user_id, primary.embedding, pipeline.embedder_name
        )
        return face

    async def list_faces(self, user_id: uuid.UUID) -> list[FaceRow]:
        await self._require_user(user_id)
        return await self.faces.list_for_user(user_id)

    async def delete_face(self, user_id: uuid.UUID, face_id: uuid.UUID) -> None:
        await self._require_user(user_id)
        face = await self.faces.get(user_id, face_id)
        if face is None:
            raise FaceNotFoundError(f"user {user_id} has no face {face_id}")
        await self.faces.delete(face)
        await self.gallery.face_removed(self.session, face_id)
