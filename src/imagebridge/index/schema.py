"""Tables of the index. Changes go through an Alembic revision in ``migrations/versions``.

The dialect-specific query indexes (code-point order for person names, Patient IDs and
accession numbers; series by modality) are created by revision 0004 and not declared here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
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

fhir_patient_ids = Table(
    "fhir_patient_ids",
    metadata,
    Column("fhir_id", String(64), primary_key=True),
    Column("patient_id", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    UniqueConstraint("patient_id", "issuer"),
)
"""FHIR logical ids of archive patients: a digest of (PatientID, IssuerOfPatientID), so never reused."""

auth_users = Table(
    "auth_users",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("patients", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""People who sign in at /oauth/authorize; ``patients`` lists the FHIR Patient ids they may act for."""

auth_clients = Table(
    "auth_clients",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(128), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("redirect_uris", Text, nullable=False),
    Column("jwks", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("policy", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("launch_url", Text, nullable=False, server_default=""),  # revision 0008 (EHR launch)
    Column("pre_approved", Boolean, nullable=False, server_default=false()),  # revision 0008
)
"""Registered SMART apps and backend services (RFC 7591 metadata plus a pre-authorized access policy;
since 0008 the app's EHR launch URL and whether the organisation pre-approved it for EHR launches)."""

auth_tokens = Table(
    "auth_tokens",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("grant_id", String(64), nullable=False, index=True),
    Column("client_id", String(128), nullable=False, index=True),
    Column("scope", Text, nullable=False),
    Column("patient", String(64), nullable=True),
    Column("fhir_user", Text, nullable=True),
    Column("subject", String(128), nullable=True),
    Column("data", Text, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("revoked", Boolean, nullable=False),
)
"""Authorization codes, access and refresh tokens, stored as SHA-256 digests, never in plain text."""

auth_assertion_jtis = Table(
    "auth_assertion_jtis",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("client_id", String(128), nullable=False),
    Column("jti", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("client_id", "jti"),
)
"""``jti`` of client assertions already used, kept until they expire (SMART client-confidential-asymmetric)."""

# --- Sharing and the access log (issue 5, revision 0006) -------------------------------------

shares = Table(
    "shares",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("share_id", String(64), nullable=False, unique=True),
    Column("patient", String(64), nullable=False, index=True),
    Column("studies", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("recipient", Text, nullable=True),
    Column("allow_download", Boolean, nullable=False),
    Column("code_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("failed_attempts", Integer, nullable=False),
    Column("locked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_by", Text, nullable=True),
)
"""A patient's share of some studies: ``studies`` is a JSON list fixed at creation; the access code
is stored only as an argon2id hash; ``patient`` is the FHIR Patient id (``fhir_patient_ids``)."""

share_sessions = Table(
    "share_sessions",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("share_id", String(64), nullable=False, index=True),
    Column("grant_id", String(64), nullable=False),
    Column("remote", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
"""Each successful redemption: the token grant it issued, so revoking the share revokes them all."""

share_attempts = Table(
    "share_attempts",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("share_id", String(64), nullable=False),
    Column("remote", String(128), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("success", Boolean, nullable=False),
    Index(None, "share_id", "at"),
    Index(None, "remote", "at"),
)
"""Redemption attempts, for the rate limits per share and per remote address (kept a day)."""

audit_events = Table(
    "audit_events",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("recorded", DateTime(timezone=True), nullable=False, index=True),
    Column("action", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("client_id", Text, nullable=True),
    Column("user", Text, nullable=True),
    Column("share_id", String(64), nullable=True),
    Column("token_patient", String(64), nullable=True),
    Column("remote", Text, nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("resource", String(64), nullable=True),
    Column("interaction", String(32), nullable=True),
    Column("patient", String(64), nullable=True),
    Column("study_uid", UID, nullable=True),
    Column("series_uid", UID, nullable=True),
    Column("instance_uid", UID, nullable=True),
    Column("count", Integer, nullable=False),
    Column("detail", Text, nullable=False),
    Index(None, "patient", "recorded"),
    Index(None, "study_uid"),
)
"""The durable access log (``audit/``), served as FHIR AuditEvent; ``count`` > 1 when identical
allow events within a few seconds were coalesced; ``detail`` is JSON of any other fields."""

# --- access policy (DICOMweb enforcement; revision 0005) ---------------------------------------

access_restrictions = Table(
    "access_restrictions",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", UID, nullable=False),
    Column("series_uid", UID, nullable=False),
    Column("sop_uid", UID, nullable=False),
    Column("category", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("study_uid", "series_uid", "sop_uid"),
)
"""Restricted studies, series or instances (a sensitive category). ``study_uid`` is always the
containing study and leads the unique key, so "is anything in this study restricted" is one
indexed lookup; ``series_uid`` and ``sop_uid`` are empty for a whole study (or series)."""

access_exclusions = Table(
    "access_exclusions",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False),
    Column("study_uid", UID, nullable=False, index=True),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("username", "study_uid"),
)
"""Studies left out of one user's view (a proxy, say: a teenager's study hidden from a parent)."""

# --- reconciliation of imported (outside) studies (issue 6; revision 0007) ---------------------

import_sources = Table(
    "import_sources",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("issuer", Text, nullable=False),
    Column("accession_prefix", String(8), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""Where outside studies come from (``imagebridge source add``), besides ``[import_sources.NAME]``."""

reconciliation_cases = Table(
    "reconciliation_cases",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("study_uid", UID, nullable=False),
    Column("source_patient_id", Text, nullable=False),
    Column("source_issuer", Text, nullable=False),
    Column("incoming", Text, nullable=False),
    Column("method", String(32), nullable=False),
    Column("score", Float, nullable=True),
    Column("breakdown", Text, nullable=False),
    Column("candidate_patient_id", Text, nullable=True),
    Column("candidate_issuer", Text, nullable=True),
    Column("state", String(16), nullable=False, index=True),
    Column("patient_id", Text, nullable=True),
    Column("patient_issuer", Text, nullable=True),
    Column("decided_by", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("source", "study_uid"),
)
"""One matching decision per imported study: how (deterministic or scorecard), the score and its
per-field breakdown (JSON), the suggested patient, and the outcome; ``state`` 'pending' is the review queue."""

patient_links = Table(
    "patient_links",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("source_issuer", Text, nullable=False),
    Column("source_patient_id", Text, nullable=False),
    Column("patient_id", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source_issuer", "source_patient_id"),
)
"""A qualified outside Patient ID known to be a local patient: later imports link deterministically."""

imported_instances = Table(
    "imported_instances",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("original_sop_uid", UID, nullable=False),
    Column("study_uid", UID, nullable=False, index=True),
    Column("case_pk", Integer, ForeignKey("reconciliation_cases.pk"), nullable=False, index=True),
    Column("original_blob", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source", "original_sop_uid"),
)
"""Every instance received from a source, by its original SOP Instance UID, with the blob of the bytes
as received; 'quarantined' ones are not in the main index until their case is decided."""

outside_studies = Table(
    "outside_studies",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("study_uid", UID, nullable=False, unique=True),
    Column("source", String(64), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False, index=True),
)
"""Studies in the main index that came from outside (purged after the retention period)."""


# --- EHR launch (issue 4; revision 0008) --------------------------------------------------------

ehr_launches = Table(
    "ehr_launches",
    metadata,
    Column("launch_hash", String(64), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("username", String(128), nullable=False),
    Column("patient", String(64), nullable=False),
    Column("encounter", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
)
"""SMART EHR launch contexts: which clinician launched which app for which patient; the opaque
``launch`` value is stored as its SHA-256 only; each is used once and expires within minutes."""


# --- Media uploads (issue 6; revision 0009) -----------------------------------------------------

media_uploads = Table(
    "media_uploads",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("upload_id", String(64), nullable=False, unique=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("patient", String(64), nullable=True),
    Column("name", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("result", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, index=True),
)
"""Resumable browser uploads of media (a zip, an ISO image, a DICOM file): ``received`` bytes of
``size`` are in ``uploads/<upload_id>.part`` under the data directory. ``owner`` is who uploaded
(``user:``, ``client:`` or ``patient:``); ``patient`` is set for a patient's own upload, which is
never linked to anyone else. ``result`` is the import's JSON once run."""
