"""The seed tutorial's routes."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from facesvc.api.schemas.common import BoxOut, Score
from facesvc.db import models as db
from facesvc.services.recognition.service import Identification, Verification


class LegacyRegisterResponse(BaseModel):
    user_id: uuid.UUID
    name: str
    face_id: uuid.UUID
    box: BoxOut

    @classmethod
    def of(cls, user: db.User, face: db.Face) -> LegacyRegisterResponse:
        return cls(user_id=user.id, name=user.name, face_id=face.id, box=BoxOut.of_stored(face))


class LegacyLoginResponse(BaseModel):
    match: bool
    user_id: uuid.UUID | None
    name: str | None
    similarity: Score | None
    threshold: float

    @classmethod
    def of_verification(cls, result: Verification, name: str | None) -> LegacyLoginResponse:
        """A login against ``name`` (the user found by it, or None)."""
        return cls(
            match=result.match,
            user_id=result.user_id if result.match else None,
            name=name if result.match else None,
            similarity=result.similarity,
            threshold=result.threshold,
        )

    @classmethod
    def of_identification(cls, result: Identification) -> LegacyLoginResponse:
        """A login without a name: the best candidate, if it cleared the threshold."""
        # a login reveals no name or score unless it succeeds (no hill-climbing towards someone)
        best = result.candidates[0] if result.match is not None and result.candidates else None
        return cls(
            match=result.match is not None,
            user_id=result.match,
            name=None if best is None else best.name,
            similarity=None if best is None else best.similarity,
            threshold=result.threshold,
        )
