"""Indexes for the common QIDO-RS / C-FIND matches.

Person names and Patient IDs are matched in code-point order (``search._Dialect.bytewise``):
PostgreSQL needs an index in the "C" collation for that, SQLite's BINARY default is it.
ModalitiesInStudy is matched through series by modality.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BYTEWISE = (("patients", "name_search"), ("patients", "patient_id"), ("studies", "accession_number"))


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, column in _BYTEWISE:
        expression: str | sa.TextClause = sa.text(f'{column} COLLATE "C"') if postgresql else column
        op.create_index(f"ix_{table}_{column}_bytewise", table, [expression])
    op.create_index("ix_series_modality_study_pk", "series", ["modality", "study_pk"])


def downgrade() -> None:
    op.drop_index("ix_series_modality_study_pk", table_name="series")
    for table, column in _BYTEWISE:
        op.drop_index(f"ix_{table}_{column}_bytewise", table_name=table)
