"""security: tenants, API keys, per-tenant users, encrypted embeddings, lockout, audit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Existing users move to the tenant "default" (a fixed id); existing faces keep their
embeddings in the clear (key_id NULL) until ``facesvc keys rotate-data`` encrypts them.
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT_ID = uuid.UUID("00000000-0000-4000-8000-000000000000")


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.bulk_insert(tenants, [{"id": DEFAULT_TENANT_ID, "name": "default"}])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_api_keys_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("secret_sha256", name="uq_api_keys_secret_sha256"),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tenant_id", sa.Uuid(), nullable=True))
    users = sa.table("users", sa.column("tenant_id", sa.Uuid()))
    op.execute(users.update().values(tenant_id=DEFAULT_TENANT_ID))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("tenant_id", existing_type=sa.Uuid(), nullable=False)
        batch.create_foreign_key(
            "fk_users_tenant_id_tenants", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
        batch.drop_constraint("uq_users_external_id", type_="unique")
        batch.create_unique_constraint("uq_users_tenant_id", ["tenant_id", "external_id"])
        batch.create_index("ix_users_tenant_id", ["tenant_id"])

    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("quality", sa.Float(), nullable=True))
        batch.add_column(sa.Column("consented_at", sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        "login_attempts",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "subject_id", name="pk_login_attempts"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("result", sa.String(length=40), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index(
        "ix_audit_events_tenant_id_created_at", "audit_events", ["tenant_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_tenant_id_created_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("login_attempts")
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("consented_at")
        batch.drop_column("quality")
        batch.drop_column("key_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_tenant_id")
        batch.drop_constraint("uq_users_tenant_id", type_="unique")
        batch.drop_constraint("fk_users_tenant_id_tenants", type_="foreignkey")
        batch.drop_column("tenant_id")
        batch.create_unique_constraint("uq_users_external_id", ["external_id"])
    op.drop_index("ix_api_keys_tenant_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tenants")
