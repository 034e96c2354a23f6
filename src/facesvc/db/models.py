"""ORM models. The schema itself is created only by the Alembic migrations in ``alembic/``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
    UniqueConstraint,
    Uuid,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from facesvc.db.codec import decode_embedding, encode_embedding

__all__ = [
    "NAMING_CONVENTION",
    "ApiKey",
    "AuditEvent",
    "Base",
    "Face",
    "ItemState",
    "Job",
    "JobItem",
    "JobState",
    "LivenessFrame",
    "LivenessSession",
    "LoginAttempts",
    "StringEnum",
    "Tenant",
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


E = TypeVar("E", bound=StrEnum)


class StringEnum(TypeDecorator[E]):
    """A ``StrEnum`` kept as its value in a plain ``VARCHAR`` (no database enum type: a new
    member needs no migration) and read back as the member. A value outside the enum is
    refused when written."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The tenant that rows written before tenants existed (migration 0003) belong to.
DEFAULT_TENANT_ID = uuid.UUID("00000000-0000-4000-8000-000000000000")
DEFAULT_TENANT_NAME = "default"


class Tenant(Base):
    """Every API key belongs to one tenant; users, faces, searches and audit are scoped to it."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    # Verification needs a passed liveness session (PATCH /v1/tenant, or for every tenant
    # FACESVC_LIVENESS_REQUIRED).
    require_liveness: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # Age, gender and expression are estimated only when on (PATCH /v1/tenant): emotion
    # recognition and biometric categorisation are restricted by the EU AI Act (Art. 5(1)(f)
    # and (g), Annex III); off by default.
    sensitive_attributes: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )


class ApiKey(Base):
    """An API key, stored only as the SHA-256 of the whole key, which is also how a presented
    key is found. Keys are >= 128 random bits, so a slow password hash would add nothing;
    ``prefix`` is the start of the key, kept to tell keys apart in listings."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(32), nullable=False)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    scopes: Mapped[str] = mapped_column(String(100), nullable=False)  # space-separated
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
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
    # float32 little-endian bytes of the L2-normalised vector (see facesvc.db.codec),
    # AES-GCM encrypted (nonce + ciphertext + tag) under the data key ``key_id``; NULL
    # key_id: stored in the clear (dev mode only).
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
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
    # Opt-in (FACESVC_STORE_FACE_CROPS): the face's crop as JPEG, encrypted like the
    # embedding (same key, associated data "<face id>:crop"), so `facesvc reembed` can
    # recompute the embedding with another model. NULL: not kept.
    crop: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    # Enrolment quality in [0, 1] (facesvc.inference.quality); NULL for faces enrolled before.
    quality: Mapped[float | None] = mapped_column(Float, nullable=True)
    # When the person's consent to store this face was recorded (enrolment requires it).
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )

    user: Mapped[User] = relationship(back_populates="faces", lazy="raise")

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
    # random, set by migration 0008: names this database's shared gallery snapshots
    instance: Mapped[str | None] = mapped_column(String(32), nullable=True)


class GalleryChange(Base):
    """What gallery version ``version`` changed: ``add`` or ``remove_face`` (the key: the
    face) or ``remove_user`` (the key: the user). Written in the transaction that bumps the
    version, so a worker behind replays the changes since its own version (an added face's
    vector is read from its row) instead of reloading every face. Old rows are pruned; a
    worker further behind than the log reloads."""

    __tablename__ = "gallery_changes"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    # the face or user id, sealed with the data key like an embedding (the version as
    # associated data): an erased face's id is not left readable in the log
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class LoginAttempts(Base):
    """Consecutive failed verifications of one user id within a tenant (lockout).

    Keyed by the id that was tried, not a foreign key: ids of users that do not exist lock
    the same way, so the answers do not tell which users exist."""

    __tablename__ = "login_attempts"

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow
    )


class AuditEvent(Base):
    """Who did what, in which tenant, with what result. Never an image or an embedding.

    No foreign keys: the trail outlives the users and keys it names."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    actor: Mapped[str] = mapped_column(String(100), nullable=False)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    result: Mapped[str] = mapped_column(String(40), nullable=False)
    similarity: Mapped[float | None] = mapped_column(Float, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # leased by one worker's runner
    SUCCEEDED = "succeeded"  # every photo processed (each may still have failed on its own)
    FAILED = "failed"  # the job stopped: ``jobs.error`` says why
    CANCELLED = "cancelled"

    @classmethod
    def active(cls) -> tuple[JobState, ...]:
        """The states a job leaves (by cancel, or its runner); the others are final."""
        return cls.QUEUED, cls.RUNNING

    @property
    def is_final(self) -> bool:
        return self not in JobState.active()


class ItemState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # never processed: the job was cancelled or failed first


class Job(Base):
    """Detection or enrolment of many photos, run in the background (workers/job_runner.py).

    Everything needed to resume after a restart is here and in ``job_items``: who asked
    (the job acts and is audited as that key), the target user, and the photos themselves.
    ``runner_id`` and ``heartbeat_at`` are the lease of the worker running it: a running job
    whose heartbeat is older than the lease was left by a crashed worker and is queued again.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_jobs_state_created_at", "state", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(20), nullable=False)  # detect | enrol
    state: Mapped[JobState] = mapped_column(
        StringEnum(JobState, 20), nullable=False, default=JobState.QUEUED
    )
    # An enrol job's user; deleting the user deletes the job and its pending photos.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    actor: Mapped[str] = mapped_column(String(100), nullable=False)
    scopes: Mapped[str] = mapped_column(String(100), nullable=False)  # space-separated
    request_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # failed included
    failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    runner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __repr__(self) -> str:
        return f"Job(id={self.id!s}, kind={self.kind!r}, state={self.state!r})"


class JobItem(Base):
    """One photo of a job. ``image`` is AES-GCM encrypted under data key ``key_id`` with the
    item's id as associated data (NULL key_id: dev mode, in the clear), and set to NULL in
    the transaction that stores the photo's ``result``."""

    __tablename__ = "job_items"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[ItemState] = mapped_column(
        StringEnum(ItemState, 20), nullable=False, default=ItemState.PENDING
    )
    image: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LivenessSession(Base):
    """One challenge-response liveness check (facesvc.services.liveness).

    ``progress`` is the checker's state (challenges, how many are done, what the frames
    showed); ``reference`` the first frame's face embedding, encrypted like a face's (row id
    as associated data), kept to tell that every frame and the login photo show the same
    person. ``version`` is bumped by every change: two requests that change one session at
    once cannot both win (the second gets 409). A passed session logs in once: ``used_at``."""

    __tablename__ = "liveness_sessions"
    __table_args__ = (
        Index("ix_liveness_sessions_tenant_id_expires_at", "tenant_id", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )
    # in_progress | passed | failed ("expired" is read from expires_at)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="in_progress")
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    reference: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_name: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LivenessFrame(Base):
    """The SHA-256 of every frame a liveness session used, per tenant: a frame sent to a
    second session is a replay (the session fails as ``replayed-frames``). Deleted with its
    session."""

    __tablename__ = "liveness_frames"

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("liveness_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )


# faces.vector (migration 0007, PostgreSQL with pgvector only): the plaintext embedding for
# FACESVC_GALLERY_BACKEND=pgvector, written and searched with SQL of its own
# (facesvc.repositories.face_vectors), so it is not mapped: the ORM works without it.
PGVECTOR_COLUMN = "vector"
PGVECTOR_INDEX = "ix_faces_vector_hnsw"
PGVECTOR_MISSING_INDEX = "ix_faces_vector_missing"  # partial: faces with no vector yet


def include_in_autogenerate(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's comparison of the models with a database leaves out the pgvector column and
    its index, which only some databases have."""
    if type_ == "column" and name == PGVECTOR_COLUMN:
        return getattr(getattr(obj, "table", None), "name", None) != "faces"
    return not (type_ == "index" and name in (PGVECTOR_INDEX, PGVECTOR_MISSING_INDEX))
