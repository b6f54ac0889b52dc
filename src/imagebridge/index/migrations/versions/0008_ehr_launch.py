"""EHR launch contexts and organisation pre-approval of apps

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("auth_clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("launch_url", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("pre_approved", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "ehr_launches",
        sa.Column("launch_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=False),
        sa.Column("encounter", sa.String(length=64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("launch_hash", name=op.f("pk_ehr_launches")),
    )
    op.create_index(op.f("ix_ehr_launches_expires_at"), "ehr_launches", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ehr_launches_expires_at"), table_name="ehr_launches")
    op.drop_table("ehr_launches")
    with op.batch_alter_table("auth_clients", schema=None) as batch_op:
        batch_op.drop_column("pre_approved")
        batch_op.drop_column("launch_url")
