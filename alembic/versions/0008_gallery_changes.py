"""gallery_changes: what each gallery version changed, so a worker catches up on the changes
another worker made instead of reloading the whole gallery

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A random name for this database's gallery: shared snapshots of it (facesvc.gallery.lean)
    # are named by it, so a recreated database at the same path never attaches an old one.
    with op.batch_alter_table("gallery_state") as batch:
        batch.add_column(sa.Column("instance", sa.String(length=32), nullable=True))
    op.execute(
        sa.text("UPDATE gallery_state SET instance = :instance").bindparams(
            instance=uuid.uuid4().hex
        )
    )
    op.create_table(
        "gallery_changes",
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("version", name="pk_gallery_changes"),
    )


def downgrade() -> None:
    op.drop_table("gallery_changes")
    with op.batch_alter_table("gallery_state") as batch:
        batch.drop_column("instance")
