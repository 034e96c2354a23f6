"""liveness sessions: challenge-response checks, the digests of the frames they used, and
the tenant setting that makes verification need one

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("require_liveness", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "liveness_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("reference", sa.LargeBinary(), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_liveness_sessions_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_liveness_sessions"),
    )
    op.create_index(
        "ix_liveness_sessions_tenant_id_expires_at",
        "liveness_sessions",
        ["tenant_id", "expires_at"],
    )
    op.create_table(
        "liveness_frames",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["liveness_sessions.id"],
            name="fk_liveness_frames_session_id_liveness_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "digest", name="pk_liveness_frames"),
    )
    op.create_index("ix_liveness_frames_session_id", "liveness_frames", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_liveness_frames_session_id", table_name="liveness_frames")
    op.drop_table("liveness_frames")
    op.drop_index("ix_liveness_sessions_tenant_id_expires_at", table_name="liveness_sessions")
    op.drop_table("liveness_sessions")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("require_liveness")
