"""index the blobs imports keep, for removing a blob only when nothing names it

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_imported_instances_original_blob"), "imported_instances", ["original_blob"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_imported_instances_original_blob"), table_name="imported_instances")
