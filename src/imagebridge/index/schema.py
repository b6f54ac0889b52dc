"""Tables of the index. Changes go through an Alembic revision in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UID = String(64)
"""PS3.5 §9.1: a UID has at most 64 characters."""

patients = Table(
    "patients",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("name_search", Text, nullable=False),
    Column("birth_date", Text, nullable=False),
    Column("sex", Text, nullable=False),
    Column("attrs", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("patient_id", "issuer"),
)

studies = Table(
    "studies",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False, index=True),
    Column("study_date", Text, nullable=False, index=True),
    Column("study_time", Text, nullable=False),
    Column("accession_number", Text, nullable=False, index=True),
    Column("description", Text, nullable=False),
    Column("referring_physician", Text, nullable=False),
    Column("referring_search", Text, nullable=False),
    Column("study_id", Text, nullable=False),
    Column("modalities", Text, nullable=False),
    Column("num_series", Integer, nullable=False),
    Column("num_instances", Integer, nullable=False),
    Column("attrs", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
)

series = Table(
    "series",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("series_uid", UID, nullable=False, unique=True),
    Column("study_pk", Integer, ForeignKey("studies.pk"), nullable=False, index=True),
    Column("modality", Text, nullable=False, index=True),
    Column("series_number", Integer, nullable=True),
    Column("description", Text, nullable=False),
    Column("performed_date", Text, nullable=False),
    Column("performed_time", Text, nullable=False),
    Column("num_instances", Integer, nullable=False),
    Column("attrs", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("sop_uid", UID, nullable=False, unique=True),
    Column("series_pk", Integer, ForeignKey("series.pk"), nullable=False),
    Column("sop_class_uid", UID, nullable=False, index=True),
    Column("instance_number", Integer, nullable=True),
    Column("transfer_syntax", UID, nullable=False),
    Column("blob_key", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("number_of_frames", Integer, nullable=True),
    Column("metadata", Text, nullable=False),
    Column("frame_index", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "series_pk", "instance_number"),
)

peers = Table(
    "peers",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("ae_title", String(16), nullable=False, index=True),
    Column("host", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("tls", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""Remote DICOM application entities (PS3.8 §7.1) known by name: callers allowed in, C-MOVE destinations."""
