"""Enrolment: one photo -> one stored, normalised embedding for a user."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.engine import erase_deleted_after_commit, has_written
from facesvc.db.group_writer import Writer
from facesvc.db.models import AuditEvent, Face
from facesvc.errors import (
    ConsentRequiredError,
    FaceNotFoundError,
    ImageError,
    ServiceError,
    UserNotFoundError,
)
from facesvc.gallery.backend import Gallery
from facesvc.inference.quality import DEFAULT_THRESHOLDS, QualityThresholds
from facesvc.repositories.audit import AuditRepository
from facesvc.repositories.users import UserRepository
from facesvc.security.keys import Caller
from facesvc.services.analysis import FaceAnalysisService, PrimaryFace
from facesvc.services.audit import AuditTrail
from facesvc.settings import Settings


@dataclass(frozen=True)
class EnrolmentOptions:
    """The quality gate (None: off), whether a face crop is kept for `facesvc reembed`, and
    how large a second face may be beside the one enrolled; the same for the API, background
    jobs and the CLI (from the settings)."""

    quality: QualityThresholds | None = DEFAULT_THRESHOLDS
    keep_crops: bool = False
    second_face_ratio: float = 0.6

    @classmethod
    def from_settings(cls, settings: Settings) -> EnrolmentOptions:
        return cls(
            quality=DEFAULT_THRESHOLDS if settings.enrol_quality_gate else None,
            keep_crops=settings.store_face_crops,
            second_face_ratio=settings.enrol_second_face_ratio,
        )


def require_consent(consent: bool) -> None:
    """Faces are stored only with the person's recorded consent (enrolment, enrol jobs)."""
    if consent is not True:
        raise ConsentRequiredError(
            "faces are biometric data: enrol only with the person's recorded consent "
            "(send consent=true)"
        )


async def require_user(users: UserRepository, user_id: uuid.UUID) -> None:
    if await users.get(user_id) is None:
        raise UserNotFoundError(f"no user with id {user_id}")


class EnrolmentService:
    """Faces of the caller's tenant's users."""

    def __init__(
        self,
        session: AsyncSession,
        analysis: FaceAnalysisService,
        gallery: Gallery,
        caller: Caller,
        options: EnrolmentOptions | None = None,
        writer: Writer | None = None,
    ) -> None:
        options = options or EnrolmentOptions()
        # With a group writer (SQLite), a single enrolment's rows are written by it with
        # other requests' writes, unless ``session`` has written already (the legacy register
        # creates the user first); else in ``session`` (on PostgreSQL a second connection per
        # request would buy nothing and halve the pool).
        self.writer = writer
        self.quality = options.quality
        self.keep_crops = options.keep_crops
        self.second_face_ratio = options.second_face_ratio
        self.session = session
        self.gallery = gallery
        self.caller = caller
        self.users = UserRepository(session, caller.tenant_id)
        self.faces = gallery.faces(session)
        self.analysis = analysis
        self.audit = AuditTrail(session, caller)

    async def _require_user(self, user_id: uuid.UUID) -> None:
        await require_user(self.users, user_id)

    async def enrol(self, user_id: uuid.UUID, data: bytes, *, consent: bool) -> Face:
        require_consent(consent)
        # the models first, the database after: no connection is held during inference
        primary = await self._analyse(data)
        await self._require_user(user_id)
        if self.writer is None or not self.writer.groups or has_written(self.session):
            return await self._store(self.session, user_id, primary)
        event = self.audit.event("face.enrol", "ok", user_id=user_id)  # this request's id

        async def store(session: AsyncSession) -> Face:
            return await self._store(session, user_id, primary, event)

        return await self.writer.run(store)

    async def _analyse(self, data: bytes) -> PrimaryFace:
        return await self.analysis.primary_face(
            data,
            second_face_ratio=self.second_face_ratio,
            quality=self.quality,
            keep_crop=self.keep_crops,
        )

    async def _store(
        self,
        session: AsyncSession,
        user_id: uuid.UUID,
        primary: PrimaryFace,
        event: AuditEvent | None = None,
    ) -> Face:
        """The face row, its gallery change and its audit row, in ``session``'s transaction."""
        box = primary.face.box
        pipeline = self.analysis.pipeline
        face = await self.gallery.store_face(
            session,
            user_id,
            primary.embedding,
            tenant_id=self.caller.tenant_id,
            model_name=pipeline.embedding_space,
            model_version=pipeline.embedder_version,
            box=(box.x, box.y, box.width, box.height),
            image_size=(primary.width, primary.height),
            detection_score=primary.face.detection.score,
            quality=primary.quality.score if primary.quality else None,
            consent=True,
            crop=primary.crop,
        )
        await AuditRepository(session).add(
            event or self.audit.event("face.enrol", "ok", user_id=user_id)
        )
        return face

    async def enrol_many(
        self, user_id: uuid.UUID, images: list[bytes], *, consent: bool
    ) -> list[Face | ServiceError | ImageError]:
        """Several photos of one user: analysed concurrently (so the models batch them),
        stored in this one transaction; each photo succeeds or fails on its own."""
        require_consent(consent)
        analysed = await asyncio.gather(
            *(self._analyse(data) for data in images),
            return_exceptions=True,
        )
        await self._require_user(user_id)  # after the models (no connection held meanwhile)
        results: list[Face | ServiceError | ImageError] = []
        for outcome in analysed:
            if isinstance(outcome, ServiceError | ImageError):
                results.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(await self._store(self.session, user_id, outcome))
        return results

    async def list_faces(self, user_id: uuid.UUID) -> list[Face]:
        await self._require_user(user_id)
        return await self.faces.list_for_user(user_id)

    async def delete_face(self, user_id: uuid.UUID, face_id: uuid.UUID) -> None:
        await self._require_user(user_id)
        face = await self.faces.get(user_id, face_id)
        if face is None:
            raise FaceNotFoundError(f"user {user_id} has no face {face_id}")
        await self.gallery.remove_face(self.session, face)
        await self.audit.record("face.delete", "ok", user_id=user_id)
        erase_deleted_after_commit(self.session)
