"""Faces: stored embeddings with the model that produced them, and their boxes.

Embeddings are encrypted on the way in and decrypted on the way out by the repository's
:class:`EmbeddingCipher`; nothing above this layer sees a ciphertext.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from facesvc.db.codec import decode_embeddings, encode_embedding
from facesvc.db.models import Face, User, utcnow
from facesvc.security.crypto import EmbeddingCipher

# Shape of the empty matrix when there is nothing to return (FaceNet's width).
DEFAULT_EMBEDDING_DIM = 128
# Stored vectors are L2-normalised; anything further off than this is a caller bug.
_NORM_TOLERANCE = 1e-3
# Associated data that tells a face's crop from its embedding (both sealed with the row id).
CROP = b":crop"
# Below both SQLite's and PostgreSQL's bound-parameter limits.
_IN_CHUNK = 500


class FaceRepository:
    def __init__(self, session: AsyncSession, cipher: EmbeddingCipher) -> None:
        self._session = session
        self._cipher = cipher

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
        quality: float | None = None,
        consent: bool = False,
        crop: bytes | None = None,
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
        face_id = uuid.uuid4()
        stored, key_id = self._cipher.encrypt(encode_embedding(vec), face_id)
        sealed_crop = None if crop is None else self._cipher.encrypt(crop, face_id, CROP)[0]
        face = Face(
            id=face_id,
            user_id=user_id,
            embedding=stored,
            key_id=key_id,
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
            quality=None if quality is None else float(quality),
            consented_at=utcnow() if consent else None,
            crop=sealed_crop,
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

    async def replace_embedding(
        self,
        face_id: uuid.UUID,
        embedding: npt.NDArray[np.floating],
        *,
        model_name: str,
        model_version: str,
    ) -> None:
        """The face's new embedding (its crop is re-sealed under the active key too)."""
        vec = np.asarray(embedding, dtype=np.float32)
        face = await self._session.get(Face, face_id, options=[undefer(Face.crop)])
        if face is None:
            return  # deleted meanwhile
        _seal(face, encode_embedding(vec), self._cipher)
        face.embedding_dim = int(vec.shape[0])
        face.model_name = model_name
        face.model_version = model_version
        await self._session.flush()

    async def delete(self, face: Face) -> None:
        await self._session.delete(face)
        await self._session.flush()

    async def embeddings_for_user(
        self, user_id: uuid.UUID, model_name: str
    ) -> tuple[list[uuid.UUID], npt.NDArray[np.float32]]:
        """Face ids and their ``(n, dim)`` float32 embeddings from one model."""
        stmt = (
            select(Face.id, Face.embedding, Face.embedding_dim, Face.key_id)
            .where(Face.user_id == user_id, Face.model_name == model_name)
            .order_by(Face.created_at, Face.id)
        )
        rows = (await self._session.execute(stmt)).all()
        blobs = [self._cipher.decrypt(row[1], row[3], row[0]) for row in rows]
        return [row[0] for row in rows], _stack(blobs, [row[2] for row in rows])

    async def tenant_user_embeddings(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, model_name: str
    ) -> tuple[bool, list[uuid.UUID], npt.NDArray[np.float32]]:
        """Whether the tenant has this user, and the user's face ids and ``(n, dim)``
        embeddings from one model: one query (the user, outer-joined to its faces)."""
        stmt = (
            select(User.id, Face.id, Face.embedding, Face.embedding_dim, Face.key_id)
            .outerjoin(Face, and_(Face.user_id == User.id, Face.model_name == model_name))
            .where(User.id == user_id, User.tenant_id == tenant_id)
            .order_by(Face.created_at, Face.id)
        )
        rows = list((await self._session.execute(stmt)).all())
        faces = [row for row in rows if row[1] is not None]
        blobs = [self._cipher.decrypt(row[2], row[4], row[1]) for row in faces]
        return bool(rows), [row[1] for row in faces], _stack(blobs, [row[3] for row in faces])

    async def all_embeddings(
        self, model_name: str
    ) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID], npt.NDArray[np.float32]]:
        """Face ids, their user ids, their tenant ids and ``(n, dim)`` embeddings of every
        face from one model (all tenants: the gallery index filters per search)."""
        stmt = (
            _sealed_rows()
            .where(Face.model_name == model_name)
            .order_by(Face.user_id, Face.created_at, Face.id)
        )
        rows = (await self._session.execute(stmt)).all()
        blobs = [self._cipher.decrypt(row[3], row[5], row[0]) for row in rows]
        matrix = _stack(blobs, [row[4] for row in rows])
        return [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows], matrix

    async def embeddings_by_id(
        self, face_ids: Sequence[uuid.UUID], model_name: str
    ) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, npt.NDArray[np.float32]]]:
        """(face id, user id, tenant id, embedding) of those of ``face_ids`` that still exist
        and come from ``model_name`` (a worker catching up on another worker's enrolments)."""
        found = []
        for start in range(0, len(face_ids), _IN_CHUNK):
            stmt = (
                _sealed_rows()
                .where(Face.id.in_(face_ids[start : start + _IN_CHUNK]))
                .where(Face.model_name == model_name)
            )
            for face_id, user_id, tenant_id, blob, dim, key_id in (
                await self._session.execute(stmt)
            ).all():
                plain = self._cipher.decrypt(blob, key_id, face_id)
                found.append((face_id, user_id, tenant_id, decode_embeddings([plain], dim)[0]))
        return found

    async def reencrypt_batch(
        self, after: uuid.UUID | None, limit: int
    ) -> tuple[int, uuid.UUID | None]:
        """Re-encrypt up to ``limit`` faces (ordered by id, after ``after``) under the active
        key. Returns how many changed and the last id seen (None when done)."""
        stmt = select(Face).options(undefer(Face.crop)).order_by(Face.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Face.id > after)
        faces = list((await self._session.scalars(stmt)).all())
        changed = 0
        for face in faces:
            if face.key_id == self._cipher.active_key_id and face.key_id is not None:
                continue
            plain = self._cipher.decrypt(face.embedding, face.key_id, face.id)
            _seal(face, plain, self._cipher)
            changed += 1
        await self._session.flush()
        return changed, (faces[-1].id if len(faces) == limit else None)

    async def key_id_counts(self) -> dict[str | None, int]:
        """How many faces are stored under each data key (None: in the clear)."""
        stmt = select(Face.key_id, func.count(Face.id)).group_by(Face.key_id)
        return {key_id: int(n) for key_id, n in (await self._session.execute(stmt)).all()}

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


def _seal(face: Face, embedding: bytes, cipher: EmbeddingCipher) -> None:
    """Store ``embedding`` (plain bytes) on the row under the active key, and re-seal its crop
    (if kept) under the same key, since one ``key_id`` covers both. The crop must be loaded."""
    crop = None if face.crop is None else cipher.decrypt(face.crop, face.key_id, face.id, CROP)
    face.embedding, face.key_id = cipher.encrypt(embedding, face.id)
    if crop is not None:
        face.crop = cipher.encrypt(crop, face.id, CROP)[0]


def _stack(blobs: Sequence[bytes], dims: Sequence[int]) -> npt.NDArray[np.float32]:
    if not blobs:
        return np.empty((0, DEFAULT_EMBEDDING_DIM), dtype=np.float32)
    dim = dims[0]
    if any(d != dim for d in dims):
        raise ValueError(f"faces of one model have mixed embedding sizes: {sorted(set(dims))}")
    return decode_embeddings(list(blobs), dim)


class StaleFaces:
    """Faces embedded by a model other than the current one (a model change), and the
    re-embedding of those that kept a crop."""

    def __init__(self, session: AsyncSession, cipher: EmbeddingCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def counts(self, current_space: str) -> dict[str, int]:
        """``{model name: faces}`` of faces not in ``current_space``."""
        stmt = (
            select(Face.model_name, func.count(Face.id))
            # two ranges of the (model_name, user_id) index, not a scan of every face
            .where(or_(Face.model_name < current_space, Face.model_name > current_space))
            .group_by(Face.model_name)
        )
        return {name: int(n) for name, n in (await self._session.execute(stmt)).all()}

    async def without_crop(self, current_space: str) -> int:
        stmt = select(func.count(Face.id)).where(
            Face.model_name != current_space, Face.crop.is_(None)
        )
        return int(await self._session.scalar(stmt) or 0)

    async def batch_with_crops(
        self, current_space: str, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, bytes]]:
        """Up to ``limit`` stale faces with a crop, by id after ``after``: (id, JPEG)."""
        stmt = (
            select(Face.id, Face.crop, Face.key_id)
            .where(Face.model_name != current_space, Face.crop.is_not(None))
            .order_by(Face.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(Face.id > after)
        rows = (await self._session.execute(stmt)).all()
        return [
            (fid, self._cipher.decrypt(crop, key_id, fid, CROP))
            for fid, crop, key_id in rows
            if crop is not None
        ]


def _sealed_rows() -> Select[uuid.UUID, uuid.UUID, uuid.UUID, bytes, int, str | None]:
    """Face id, user id, tenant id and the sealed embedding (blob, dimension, key id) of
    faces: what the gallery loads and catches up from."""
    return select(
        Face.id, Face.user_id, User.tenant_id, Face.embedding, Face.embedding_dim, Face.key_id
    ).join(User, User.id == Face.user_id)
