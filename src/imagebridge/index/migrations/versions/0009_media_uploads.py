"""resumable browser uploads of media

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "media_uploads",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("upload_id", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_media_uploads")),
        sa.UniqueConstraint("upload_id", name=op.f("uq_media_uploads_upload_id")),
    )
    op.create_index(op.f("ix_media_uploads_owner"), "media_uploads", ["owner"])
    op.create_index(op.f("ix_media_uploads_updated_at"), "media_uploads", ["updated_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_media_uploads_updated_at"), table_name="media_uploads")
    op.drop_index(op.f("ix_media_uploads_owner"), table_name="media_uploads")
    op.drop_table("media_uploads")
