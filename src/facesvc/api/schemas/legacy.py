"""The seed tutorial's routes."""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from facesvc.api.schemas.common import BoxOut
from facesvc.db import models as db


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
    similarity: float | None
    threshold: float
