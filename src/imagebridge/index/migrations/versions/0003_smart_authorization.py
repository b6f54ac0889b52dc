"""smart authorization: FHIR patient ids, users, clients, tokens, assertion jtis

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _now() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "fhir_patient_ids",
        sa.Column("fhir_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("fhir_id", name=op.f("pk_fhir_patient_ids")),
        sa.UniqueConstraint("patient_id", "issuer", name=op.f("uq_fhir_patient_ids_patient_id_issuer")),
    )
    op.create_table(
        "auth_users",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("patients", sa.Text(), nullable=False),
        _now(),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_auth_users")),
        sa.UniqueConstraint("username", name=op.f("uq_auth_users_username")),
    )
    op.create_table(
        "auth_clients",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        _now(),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_auth_clients")),
        sa.UniqueConstraint("client_id", name=op.f("uq_auth_clients_client_id")),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=True),
        sa.Column("fhir_user", sa.Text(), nullable=True),
        sa.Column("subject", sa.String(length=128), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_auth_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_tokens_token_hash")),
    )
    with op.batch_alter_table("auth_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_tokens_grant_id"), ["grant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_auth_tokens_client_id"), ["client_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_auth_tokens_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "auth_assertion_jtis",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_auth_assertion_jtis")),
        sa.UniqueConstraint("client_id", "jti", name=op.f("uq_auth_assertion_jtis_client_id_jti")),
    )
    with op.batch_alter_table("auth_assertion_jtis", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_assertion_jtis_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    for table in ("auth_assertion_jtis", "auth_tokens", "auth_clients", "auth_users", "fhir_patient_ids"):
        op.drop_table(table)
