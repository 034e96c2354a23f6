"""Random unit vectors, a brute-force search to check the gallery against, and a face stored the
way EnrolmentService stores it, for the gallery's unit tests."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from facesvc.db.engine import session_scope
from facesvc.db.models import DEFAULT_TENANT_ID as TENANT
from facesvc.db.models import Face
from facesvc.gallery.lean import LeanGallery
from facesvc.gallery.sync import GallerySync
from facesvc.repositories.faces import FaceRepository
from facesvc.security.crypto import EmbeddingCipher

CLEAR = EmbeddingCipher(None)

RNG = np.random.default_rng(3)


def unit(n: int, dim: int = 128) -> np.ndarray:
    v = RNG.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute_force(
    vectors: np.ndarray, users: list[uuid.UUID], query: np.ndarray, k: int
) -> list[uuid.UUID]:
    scores = vectors @ query
    best: dict[uuid.UUID, float] = {}
    for user, score in zip(users, scores, strict=True):
        best[user] = max(best.get(user, -2.0), float(score))
    return sorted(best, key=lambda u: -best[u])[:k]


async def add_face(
    session: AsyncSession, cipher: EmbeddingCipher, user_id: uuid.UUID, v: np.ndarray, **fields: Any
) -> Face:
    """A face row as FaceRepository stores it, with stand-in detection fields unless given
    (model "m" version "1", a 1x1 box in a 2x2 image, score 1)."""
    values: dict[str, Any] = {
        "model_name": "m",
        "model_version": "1",
        "box": (0, 0, 1, 1),
        "image_size": (2, 2),
        "detection_score": 1.0,
    }
    return await FaceRepository(session, cipher).add(user_id, v, **(values | fields))


async def enrol(
    maker: async_sessionmaker[AsyncSession],
    gallery: GallerySync | LeanGallery,
    user_id: uuid.UUID,
    v: np.ndarray,
    cipher: EmbeddingCipher = CLEAR,
) -> uuid.UUID:
    """What EnrolmentService does after the model: store, then record the gallery change."""
    async with session_scope(maker) as session:
        face = await add_face(session, cipher, user_id, v)
        await gallery.face_added(session, face.id, user_id, v, "m", TENANT)
        return face.id
