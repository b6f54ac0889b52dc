"""import sources, patient links and the reconciliation review queue

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_UID = sa.String(length=64)
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "import_sources",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("accession_prefix", sa.String(length=8), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_import_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_import_sources_name")),
    )
    op.create_table(
        "reconciliation_cases",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("study_uid", _UID, nullable=False),
        sa.Column("source_patient_id", sa.Text(), nullable=False),
        sa.Column("source_issuer", sa.Text(), nullable=False),
        sa.Column("incoming", sa.Text(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("breakdown", sa.Text(), nullable=False),
        sa.Column("candidate_patient_id", sa.Text(), nullable=True),
        sa.Column("candidate_issuer", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=True),
        sa.Column("patient_issuer", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("decided_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_reconciliation_cases")),
        sa.UniqueConstraint("source", "study_uid", name=op.f("uq_reconciliation_cases_source_study_uid")),
    )
    op.create_index(op.f("ix_reconciliation_cases_state"), "reconciliation_cases", ["state"])
    op.create_table(
        "patient_links",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_issuer", sa.Text(), nullable=False),
        sa.Column("source_patient_id", sa.Text(), nullable=False),
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_patient_links")),
        sa.UniqueConstraint(
            "source_issuer",
            "source_patient_id",
            name=op.f("uq_patient_links_source_issuer_source_patient_id"),
        ),
    )
    op.create_table(
        "imported_instances",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("original_sop_uid", _UID, nullable=False),
        sa.Column("study_uid", _UID, nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("original_blob", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("imported_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["case_pk"], ["reconciliation_cases.pk"], name=op.f("fk_imported_instances_case_pk")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_imported_instances")),
        sa.UniqueConstraint(
            "source", "original_sop_uid", name=op.f("uq_imported_instances_source_original_sop_uid")
        ),
    )
    op.create_index(op.f("ix_imported_instances_study_uid"), "imported_instances", ["study_uid"])
    op.create_index(op.f("ix_imported_instances_case_pk"), "imported_instances", ["case_pk"])
    op.create_table(
        "outside_studies",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("study_uid", _UID, nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("imported_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_outside_studies")),
        sa.UniqueConstraint("study_uid", name=op.f("uq_outside_studies_study_uid")),
    )
    op.create_index(op.f("ix_outside_studies_imported_at"), "outside_studies", ["imported_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_outside_studies_imported_at"), table_name="outside_studies")
    op.drop_table("outside_studies")
    op.drop_index(op.f("ix_imported_instances_case_pk"), table_name="imported_instances")
    op.drop_index(op.f("ix_imported_instances_study_uid"), table_name="imported_instances")
    op.drop_table("imported_instances")
    op.drop_table("patient_links")
    op.drop_index(op.f("ix_reconciliation_cases_state"), table_name="reconciliation_cases")
    op.drop_table("reconciliation_cases")
    op.drop_table("import_sources")
