"""patient-controlled shares and durable audit events

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shares",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("share_id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=False),
        sa.Column("studies", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=True),
        sa.Column("allow_download", sa.Boolean(), nullable=False),
        sa.Column("code_hash", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_at", _TS, nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_shares")),
        sa.UniqueConstraint("share_id", name=op.f("uq_shares_share_id")),
    )
    op.create_index(op.f("ix_shares_patient"), "shares", ["patient"])
    op.create_table(
        "share_sessions",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("share_id", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("remote", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_share_sessions")),
    )
    op.create_index(op.f("ix_share_sessions_share_id"), "share_sessions", ["share_id"])
    op.create_table(
        "share_attempts",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("share_id", sa.String(length=64), nullable=False),
        sa.Column("remote", sa.String(length=128), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_share_attempts")),
    )
    op.create_index(op.f("ix_share_attempts_share_id_at"), "share_attempts", ["share_id", "at"])
    op.create_index(op.f("ix_share_attempts_remote_at"), "share_attempts", ["remote", "at"])
    op.create_table(
        "audit_events",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("recorded", _TS, nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("user", sa.Text(), nullable=True),
        sa.Column("share_id", sa.String(length=64), nullable=True),
        sa.Column("token_patient", sa.String(length=64), nullable=True),
        sa.Column("remote", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("resource", sa.String(length=64), nullable=True),
        sa.Column("interaction", sa.String(length=32), nullable=True),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("series_uid", sa.String(length=64), nullable=True),
        sa.Column("instance_uid", sa.String(length=64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_audit_events_event_id")),
    )
    op.create_index(op.f("ix_audit_events_recorded"), "audit_events", ["recorded"])
    op.create_index(op.f("ix_audit_events_patient_recorded"), "audit_events", ["patient", "recorded"])
    op.create_index(op.f("ix_audit_events_study_uid"), "audit_events", ["study_uid"])


def downgrade() -> None:
    for table in ("audit_events", "share_attempts", "share_sessions", "shares"):
        op.drop_table(table)
