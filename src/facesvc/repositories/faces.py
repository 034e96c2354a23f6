"""Faces: stored embeddings with the model that produced them, and their boxes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.codec import decode_embeddings, encode_embedding
from facesvc.db.models import Face, User

# Shape of the empty matrix when there is nothing to return (FaceNet's width).
DEFAULT_EMBEDDING_DIM = 128
# Stored vectors are L2-normalised; anything further off than this is a caller bug.
_NORM_TOLERANCE = 1e-3
# Below both SQLite's and PostgreSQL's bound-parameter limits.
_IN_CHUNK = 500


class FaceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self,
        user_id: uuid.UUID,
        embedding: npt.NDArray[np.floating],
        *,
        model_name: str,
        model_version: str,
        box: tuple[float, float, float, float],
        image_size: tuple[int, int],
        detection_score: float,
    ) -> Face:
        """Store one face. ``box`` is (x, y, width, height); ``image_size`` is (width, height).

        The embedding must already be L2-normalised; it is stored bit-exactly as float32.
        """
        vec = np.asarray(embedding, dtype=np.float32)
        if vec.ndim != 1 or vec.size == 0:
            raise ValueError(f"an embedding must be a non-empty 1-D vector, got shape {vec.shape}")
        norm = float(np.linalg.norm(vec))
        if not np.isfinite(norm) or abs(norm - 1.0) > _NORM_TOLERANCE:
            raise ValueError(f"embedding must be L2-normalised (norm is {norm:.6f})")
        x, y, width, height = box
        image_width, image_height = image_size
        face = Face(
            user_id=user_id,
            embedding=encode_embedding(vec),
            embedding_dim=int(vec.shape[0]),
            model_name=model_name,
            model_version=model_version,
            box_x=float(x),
            box_y=float(y),
            box_width=float(width),
            box_height=float(height),
            image_width=int(image_width),
            image_height=int(image_height),
            detection_score=float(detection_score),
        )
        self._session.add(face)
        await self._session.flush()
        return face

    async def list_for_user(self, user_id: uuid.UUID) -> list[Face]:
        stmt = select(Face).where(Face.user_id == user_id).order_by(Face.created_at, Face.id)
        return list((await self._session.scalars(stmt)).all())

    async def get(self, user_id: uuid.UUID, face_id: uuid.UUID) -> Face | None:
        """The face, only if it belongs to this user."""
        stmt = select(Face).where(Face.id == face_id, Face.user_id == user_id)
        return (await self._session.scalars(stmt)).one_or_none()

    async def delete(self, face: Face) -> None:
        await self._session.delete(face)
        await self._session.flush()

    async def embeddings_for_user(
        self, user_id: uuid.UUID, model_name: str
    ) -> tuple[list[uuid.UUID], npt.NDArray[np.float32]]:
        """Face ids and their ``(n, dim)`` float32 embeddings from one model."""
        stmt = (
            select(Face.id, Face.embedding, Face.embedding_dim)
            .where(Face.user_id == user_id, Face.model_name == model_name)
            .order_by(Face.created_at, Face.id)
        )
        rows = (await self._session.execute(stmt)).all()
        return [row[0] for row in rows], _stack([row[1] for row in rows], [row[2] for row in rows])

    async def all_embeddings(
        self, model_name: str
    ) -> tuple[list[uuid.UUID], list[uuid.UUID], npt.NDArray[np.float32]]:
        """Face ids, their user ids and ``(n, dim)`` embeddings of every face from one model."""
        stmt = (
            select(Face.id, Face.user_id, Face.embedding, Face.embedding_dim)
            .where(Face.model_name == model_name)
            .order_by(Face.user_id, Face.created_at, Face.id)
        )
        rows = (await self._session.execute(stmt)).all()
        matrix = _stack([row[2] for row in rows], [row[3] for row in rows])
        return [row[0] for row in rows], [row[1] for row in rows], matrix

    async def names_for(self, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        """``{user id: name}`` for those of ``user_ids`` that exist."""
        wanted = list(dict.fromkeys(user_ids))
        names: dict[uuid.UUID, str] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            stmt = select(User.id, User.name).where(User.id.in_(chunk))
            for user_id, name in (await self._session.execute(stmt)).all():
                names[user_id] = name
        return names


def _stack(blobs: Sequence[bytes], dims: Sequence[int]) -> npt.NDArray[np.float32]:
    if not blobs:
        return np.empty((0, DEFAULT_EMBEDDING_DIM), dtype=np.float32)
    dim = dims[0]
    if any(d != dim for d in dims):
        raise ValueError(f"faces of one model have mixed embedding sizes: {sorted(set(dims))}")
    return decode_embeddings(list(blobs), dim)
