"""faces.vector: the plaintext embedding in a pgvector column (migration 0007, PostgreSQL with
the pgvector extension), searched by PostgreSQL for FACESVC_GALLERY_BACKEND=pgvector.

The column is not mapped by the ORM (SQLite has none): this repository owns its SQL. Vectors
travel as pgvector's text form ('[x,y,...]'); a float32 printed with ``repr`` of its float64
value reads back bit-exactly, so the stored vector equals the encrypted one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from facesvc.db.codec import decode_embeddings
from facesvc.db.models import PGVECTOR_COLUMN, PGVECTOR_INDEX
from facesvc.security.crypto import EmbeddingCipher

# Vectors are sent as text (asyncpg has no codec for the vector type) and cast in SQL.
_QUERY = "CAST(CAST(:q AS text) AS vector)"
_PUT = f"UPDATE faces SET {PGVECTOR_COLUMN} = CAST(CAST(:v AS text) AS vector) WHERE id = :id"  # noqa: S608


def vector_literal(vector: npt.NDArray[np.floating]) -> str:
    values = np.asarray(vector, dtype=np.float32).ravel().tolist()
    return "[" + ",".join(repr(v) for v in values) + "]"


@dataclass(frozen=True)
class VectorColumn:
    """What the database has: the extension's version and the column's dimension (None:
    absent)."""

    extension: str | None
    dimension: int | None
    indexed: bool


@dataclass(frozen=True)
class Candidate:
    face_id: uuid.UUID
    user_id: uuid.UUID
    similarity: float


class FaceVectors:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def column(self) -> VectorColumn:
        extension = await self._session.scalar(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        )
        # pgvector keeps a vector(n) column's dimension as its type modifier
        dimension = await self._session.scalar(
            text(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass('faces') "
                "AND attname = :column AND NOT attisdropped"
            ).bindparams(column=PGVECTOR_COLUMN)
        )
        indexed = await self._session.scalar(
            text("SELECT to_regclass(:index) IS NOT NULL").bindparams(index=PGVECTOR_INDEX)
        )
        return VectorColumn(
            None if extension is None else str(extension),
            None if dimension is None else int(dimension),
            bool(indexed),
        )

    async def put(self, face_id: uuid.UUID, vector: npt.NDArray[np.floating]) -> None:
        """The face's vector, in the caller's transaction."""
        await self._session.execute(text(_PUT).bindparams(v=vector_literal(vector), id=face_id))

    async def clear(self, face_id: uuid.UUID) -> None:
        await self._session.execute(
            text(f"UPDATE faces SET {PGVECTOR_COLUMN} = NULL WHERE id = :id").bindparams(  # noqa: S608
                id=face_id
            )
        )

    async def missing(self, model_name: str) -> int:
        """Faces of the active model without a vector (enrolled before the switch)."""
        stmt = text(
            f"SELECT count(*) FROM faces WHERE model_name = :m AND {PGVECTOR_COLUMN} IS NULL"  # noqa: S608
        ).bindparams(m=model_name)
        return int(await self._session.scalar(stmt) or 0)

    async def clear_other_models(self, model_name: str) -> int:
        """Vectors of faces from other models (stale after a model change) set to NULL."""
        stmt = text(
            f"UPDATE faces SET {PGVECTOR_COLUMN} = NULL "  # noqa: S608
            f"WHERE model_name <> :m AND {PGVECTOR_COLUMN} IS NOT NULL"
        ).bindparams(m=model_name)
        result = await self._session.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)

    async def fill_batch(
        self, cipher: EmbeddingCipher, model_name: str, dim: int, limit: int
    ) -> int:
        """Decrypt up to ``limit`` faces of ``model_name`` that have no vector and store their
        vectors; returns how many."""
        rows = (
            await self._session.execute(
                text(
                    "SELECT id, embedding, key_id FROM faces "  # noqa: S608
                    f"WHERE model_name = :m AND {PGVECTOR_COLUMN} IS NULL "
                    "AND embedding_dim = :d ORDER BY id LIMIT :n"
                ).bindparams(m=model_name, d=dim, n=limit)
            )
        ).all()
        if not rows:
            return 0
        blobs = [cipher.decrypt(bytes(blob), key_id, face_id) for face_id, blob, key_id in rows]
        matrix = decode_embeddings(blobs, dim)
        await self._session.execute(
            text(_PUT),
            [
                {"v": vector_literal(vec), "id": row[0]}
                for row, vec in zip(rows, matrix, strict=True)
            ],
        )
        return len(rows)

    async def drop_index(self) -> None:
        await self._session.execute(text(f"DROP INDEX IF EXISTS {PGVECTOR_INDEX}"))

    async def create_index(self) -> None:
        await self._session.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {PGVECTOR_INDEX} ON faces "
                f"USING hnsw ({PGVECTOR_COLUMN} vector_ip_ops)"
            )
        )

    async def analyze(self) -> None:
        await self._session.execute(text("ANALYZE faces, users"))

    async def resize(self, dim: int) -> None:
        """The column as vector(dim), every vector cleared (refill afterwards), no index."""
        await self.drop_index()
        await self._session.execute(
            text(
                f"ALTER TABLE faces ALTER COLUMN {PGVECTOR_COLUMN} TYPE vector({int(dim)}) "
                f"USING NULL::vector({int(dim)})"
            )
        )

    async def tenant_faces(self, tenant_id: uuid.UUID, model_name: str) -> int:
        stmt = text(
            "SELECT count(*) FROM faces f JOIN users u ON u.id = f.user_id "  # noqa: S608
            f"WHERE u.tenant_id = :t AND f.model_name = :m AND f.{PGVECTOR_COLUMN} IS NOT NULL"
        ).bindparams(t=tenant_id, m=model_name)
        return int(await self._session.scalar(stmt) or 0)

    async def nearest(
        self,
        query: npt.NDArray[np.floating],
        tenant_id: uuid.UUID,
        model_name: str,
        pool: int,
        ef_search: int,
    ) -> Sequence[Candidate]:
        """The ``pool`` faces of the tenant nearest to ``query`` by inner product, best face
        per user, best first: one query through the HNSW index. pgvector 0.8's iterative
        scan keeps walking the graph until ``pool`` rows pass the tenant filter (relaxed
        order: the materialised pool is sorted again by its exact distances)."""
        session = self._session
        # SET LOCAL of both, in one round trip
        await session.execute(
            text(
                "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                "set_config('hnsw.ef_search', :ef, true)"
            ).bindparams(ef=str(int(ef_search)))
        )
        # The distance is computed from the stored float32 vector (full precision, equal to
        # the encrypted one): -(v <#> q) is the exact cosine similarity of unit vectors.
        stmt = text(
            f"""
            WITH pool AS MATERIALIZED (
                SELECT f.id, f.user_id, f.{PGVECTOR_COLUMN} <#> {_QUERY} AS distance
                FROM faces f JOIN users u ON u.id = f.user_id
                WHERE u.tenant_id = :t AND f.model_name = :m AND f.{PGVECTOR_COLUMN} IS NOT NULL
                ORDER BY f.{PGVECTOR_COLUMN} <#> {_QUERY}
                LIMIT :pool
            )
            SELECT id, user_id, distance FROM (
                SELECT DISTINCT ON (user_id) id, user_id, distance
                FROM pool ORDER BY user_id, distance, id
            ) best ORDER BY distance, id
            """  # noqa: S608
        ).bindparams(q=vector_literal(query), t=tenant_id, m=model_name, pool=pool)
        rows = (await session.execute(stmt)).all()
        return [
            Candidate(_as_uuid(face_id), _as_uuid(user_id), -float(distance))
            for face_id, user_id, distance in rows
        ]


def _as_uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
