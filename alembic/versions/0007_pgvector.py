"""faces.vector: the plaintext embedding in a pgvector column with an HNSW index (inner
product), for FACESVC_GALLERY_BACKEND=pgvector; only on PostgreSQL with the extension

SQLite, and PostgreSQL without pgvector, are left exactly as they were (a no-op, and so is the
downgrade there). The column's dimension is fixed here: ``FACESVC_PGVECTOR_DIM`` (or
``alembic -x pgvector_dim=N``), default 128 (the default embedder's); the service refuses to
start when it differs from the loaded embedder's, and `facesvc gallery pgvector-fill --resize`
changes it. The encrypted ``faces.embedding`` stays the source of truth.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

"""

import logging
import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

COLUMN = "vector"
INDEX = "ix_faces_vector_hnsw"
# The faces still without a vector (a backfill's to-do list, counted at each start-up): tiny once
# the column is filled, so neither needs a scan of the whole table.
MISSING_INDEX = "ix_faces_vector_missing"
DEFAULT_DIM = 128


def _dimension() -> int:
    given = context.get_x_argument(as_dictionary=True).get("pgvector_dim")
    value = int(given or os.environ.get("FACESVC_PGVECTOR_DIM") or DEFAULT_DIM)
    if not 1 <= value <= 2000:  # HNSW indexes vectors of up to 2,000 dimensions
        raise ValueError(f"pgvector dimension must be in 1..2000, got {value}")
    return value


def _vector_extension(bind: sa.engine.Connection) -> bool:
    """Whether the ``vector`` extension is (or could be made) installed in this database."""
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).scalar():
        return True
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if not available:
        log.info("0007: PostgreSQL has no pgvector extension: faces.vector not added")
        return False
    try:
        with bind.begin_nested():  # a refusal must not abort the migration's transaction
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    except sa.exc.DBAPIError as exc:  # not permitted: a superuser must create it first
        log.warning("0007: CREATE EXTENSION vector refused (%s): faces.vector not added", exc)
        return False
    return True


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _vector_extension(bind):
        return
    op.execute(f"ALTER TABLE faces ADD COLUMN {COLUMN} vector({_dimension()})")
    op.execute(f"CREATE INDEX {INDEX} ON faces USING hnsw ({COLUMN} vector_ip_ops)")
    op.execute(f"CREATE INDEX {MISSING_INDEX} ON faces (model_name, id) WHERE {COLUMN} IS NULL")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # The extension stays: other tables may use it, and dropping it needs more rights.
    op.execute(f"DROP INDEX IF EXISTS {MISSING_INDEX}")
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.execute(f"ALTER TABLE faces DROP COLUMN IF EXISTS {COLUMN}")
