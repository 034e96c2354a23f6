"""ORM models. The schema itself is created only by the Alembic migrations in ``alembic/``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    Uuid,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from facesvc.db.codec import decode_embedding, encode_embedding

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Face",
    "UTCDateTime",
    "User",
    "decode_embedding",
    "encode_embedding",
]

# Deterministic constraint names, so migrations (and SQLite batch rebuilds) can refer to them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes.

    SQLite keeps no offset and returns naive values; PostgreSQL returns aware ones.
    Normalising here makes both backends read the same.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware (UTC) datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    # "metadata" is reserved on declarative classes, hence the trailing underscore.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    # Python-side defaults give microsecond order and need no refetch after flush (which
    # async sessions cannot lazy-load); the server defaults cover rows written by raw SQL.
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    # The database cascades the delete (passive_deletes): no need to load faces first.
    # lazy="raise": an implicit load cannot work under asyncio, so fail loudly instead.
    faces: Mapped[list[Face]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
        order_by="Face.created_at",
    )

    def __repr__(self) -> str:
        return f"User(id={self.id!s}, name={self.name!r}, external_id={self.external_id!r})"


class Face(Base):
    __tablename__ = "faces"
    __table_args__ = (Index("ix_faces_model_name_user_id", "model_name", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # float32 little-endian bytes of the L2-normalised vector (see facesvc.db.codec).
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    embedding_dim: Mapped[int] = mapped_column(Integer, nullable=False)
    model_name: Mapped[str] = mapped_column(String(100), nullable=False)
    model_version: Mapped[str] = mapped_column(String(100), nullable=False)
    box_x: Mapped[float] = mapped_column(Float, nullable=False)
    box_y: Mapped[float] = mapped_column(Float, nullable=False)
    box_width: Mapped[float] = mapped_column(Float, nullable=False)
    box_height: Mapped[float] = mapped_column(Float, nullable=False)
    image_width: Mapped[int] = mapped_column(Integer, nullable=False)
    image_height: Mapped[int] = mapped_column(Integer, nullable=False)
    detection_score: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )

    user: Mapped[User] = relationship(back_populates="faces", lazy="raise")

    @property
    def vector(self) -> npt.NDArray[np.float32]:
        """The stored embedding as a float32 vector."""
        return decode_embedding(self.embedding)

    def __repr__(self) -> str:
        return f"Face(id={self.id!s}, user_id={self.user_id!s}, model={self.model_name!r})"


class GalleryState(Base):
    """One row whose version every gallery change bumps in its own transaction.

    Workers compare it with their in-memory index's version before a 1:N search and
    reload when another worker changed the gallery.
    """

    __tablename__ = "gallery_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
