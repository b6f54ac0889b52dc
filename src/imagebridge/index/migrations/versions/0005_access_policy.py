"""access policy: restricted studies and proxy exclusions

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_restrictions",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_access_restrictions")),
        sa.UniqueConstraint(
            "study_uid",
            "series_uid",
            "sop_uid",
            name=op.f("uq_access_restrictions_study_uid_series_uid_sop_uid"),
        ),
    )
    op.create_table(
        "access_exclusions",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_access_exclusions")),
        sa.UniqueConstraint("username", "study_uid", name=op.f("uq_access_exclusions_username_study_uid")),
    )
    with op.batch_alter_table("access_exclusions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_exclusions_study_uid"), ["study_uid"], unique=False)


def downgrade() -> None:
    for table in ("access_exclusions", "access_restrictions"):
        op.drop_table(table)
