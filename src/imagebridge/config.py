"""One validated Settings object, built once at start-up and passed down.

Values come from ``IMAGEBRIDGE_*`` environment variables, an optional TOML file
(``IMAGEBRIDGE_CONFIG``) and command-line flags, in rising order of precedence.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagebridge.reconcile.settings import ImportSourceSetting, ReconciliationSettings


class DicomPeerSetting(BaseModel):
    """A remote AE named in the settings file (``[dicom_peers.NAME]``), alongside ``imagebridge peer add``."""

    model_config = {"extra": "forbid"}

    aet: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False


MRN_RULE = re.compile(
    r"^identifier\.(?:first\(\)|where\((?P<path>type\.coding\.code|type\.text|system)\s*=\s*'(?P<value>[^']+)'\))$"
)
"""The MRN identifier rules integrated mode understands (a FHIRPath subset, as SMART Imaging's reference server)."""


def read_signing_key(path: Path) -> RSAKey | ECKey:
    """A private RSA or EC key from a JWK (JSON) or PEM file; ValueError says what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the private key file {path}: {exc.strerror}") from exc
    try:
        if raw.lstrip().startswith(b"{"):
            data = json.loads(raw)
            key: RSAKey | ECKey = (ECKey if data.get("kty") == "EC" else RSAKey).import_key(data)
        else:
            key = _pem_key(raw)
    except (JoseError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} holds no RSA or EC private key (JWK JSON or PEM)") from exc
    if not key.is_private:
        raise ValueError(f"{path} holds a public key; the private one is needed")
    if key.kid is None:
        key.ensure_kid()
    return key


def _pem_key(raw: bytes) -> RSAKey | ECKey:
    try:
        return RSAKey.import_key(raw)
    except (JoseError, ValueError, TypeError):
        return ECKey.import_key(raw)


class EhrSettings(BaseModel):
    """Integrated mode (``[ehr]``, ``IMAGEBRIDGE_EHR__*``): an outside EHR is the token authority.

    Endpoints left unset are read from ``{fhir_base}/.well-known/smart-configuration``. This
    server authenticates to the EHR as a SMART Backend Services client (``private_key_jwt``).
    See docs/smart.md "Integrated mode".
    """

    model_config = {"extra": "forbid"}

    fhir_base: str = Field(description="The EHR's FHIR base URL, e.g. https://ehr.example.org/fhir.")
    issuer: str | None = Field(
        default=None, description="The EHR's token issuer; default: its smart-configuration."
    )
    introspection_endpoint: str | None = None
    token_endpoint: str | None = None
    client_id: str = Field(description="This imaging server's backend-services client_id at the EHR.")
    private_key_file: Path = Field(
        description="This server's private JWK (JSON) or PEM key, RSA or EC P-384."
    )
    signing_alg: Literal["RS384", "ES384"] | None = Field(
        default=None,
        description="Client assertion algorithm; default: RS384 for RSA keys, ES384 for EC keys.",
    )
    backend_scope: str = Field(
        default="system/Patient.rs", description="Scopes asked for this server's own token at the EHR."
    )
    mrn_identifier: str = Field(
        default="identifier.where(type.coding.code='MR')",
        description="Which Patient.identifier is the MRN: identifier.where(type.coding.code='X'), "
        "identifier.where(type.text='X'), identifier.where(system='URI') or identifier.first().",
    )
    issuers: dict[str, str] = Field(
        default_factory=dict,
        description="Identifier system -> Issuer of Patient ID (0010,0021) in this archive; "
        "systems not listed map as /fhir does (urn:oid:X -> X).",
    )
    cache_seconds: float = Field(
        default=60, ge=0, le=60, description="Longest an introspection result is reused (never past exp)."
    )
    negative_cache_seconds: float = Field(
        default=5, ge=0, le=60, description="How long an inactive token is remembered."
    )
    patient_cache_seconds: float = Field(
        default=300, ge=0, le=3600, description="How long an EHR Patient's MRN is remembered."
    )
    timeout: float = Field(default=5.0, gt=0, le=60, description="Seconds to wait for the EHR.")
    retry_after: int = Field(
        default=5, ge=1, le=600, description="Retry-After sent when the EHR is unreachable."
    )
    trust_user_scopes: bool = Field(
        default=False,
        description="user/ scopes reach every patient (the EHR decided); off: user/ scopes grant nothing here.",
    )

    @field_validator("fhir_base")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the EHR's fhir_base must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("private_key_file")
    @classmethod
    def _key_usable(cls, value: Path) -> Path:
        read_signing_key(value)
        return value

    @model_validator(mode="after")
    def _alg_fits_key(self) -> EhrSettings:
        self.signing_key()
        return self

    def signing_key(self) -> tuple[RSAKey | ECKey, str]:
        """This server's private key for client assertions, and the algorithm it signs with."""
        key = read_signing_key(self.private_key_file)
        alg = self.signing_alg or ("ES384" if isinstance(key, ECKey) else "RS384")
        if (alg == "ES384") != isinstance(key, ECKey):
            raise ValueError(
                f"signing_alg {alg} does not fit the {key.key_type} key in {self.private_key_file}"
            )
        return key, alg

    @field_validator("mrn_identifier")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        value = value.strip()
        if not MRN_RULE.match(value):
            raise ValueError(
                "mrn_identifier must be identifier.where(type.coding.code='MR'), "
                "identifier.where(type.text='X'), identifier.where(system='URI') or identifier.first()"
            )
        return value


class Settings(BaseSettings):
    """Everything the running system needs to know; defaults give the embedded mode."""

    model_config = SettingsConfigDict(env_prefix="IMAGEBRIDGE_", extra="forbid", env_nested_delimiter="__")

    data_dir: Path = Path("./imagebridge-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite in the data directory."
    )
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str | None = Field(
        default=None, description="External base URL, when the server runs behind a proxy."
    )
    dicom_port: int = 11112
    ae_title: str = "IMAGEBRIDGE"
    dicom_enabled: bool = True
    dicom_peers: dict[str, DicomPeerSetting] = Field(
        default_factory=dict, description="Remote AEs by name, in addition to those in the index."
    )
    allow_any_caller: bool = Field(
        default=False, description="Accept associations from AE titles that are not configured peers."
    )
    dicom_tls_port: int | None = Field(default=None, description="Also listen with DICOM TLS on this port.")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = Field(default=None, description="CA bundle that peers' certificates must chain to.")
    dicom_max_associations: int = 32
    dicom_acse_timeout: float = 30.0
    dicom_dimse_timeout: float = 60.0
    dicom_network_timeout: float = 60.0
    dicom_max_find_results: int = 10000
    replace_on_conflict: bool = Field(
        default=False,
        description="Store a different object under an existing SOP Instance UID by replacing it.",
    )
    http_workers: int = Field(
        default=1, ge=1, le=64, description="HTTP worker processes; each uses one core for CPU-bound work."
    )
    qido_max_limit: int = 1000
    qido_default_limit: int = 1000
    cors_origins: list[str] = Field(default_factory=list)
    dicomweb_anonymous: bool = Field(
        default=False,
        description="Serve /dicomweb without access tokens (a trusted network only; off by default).",
    )
    max_upload_bytes: int = 64 * 1024**3
    direct_writes: bool = Field(
        default=True,
        description="Write received instances to the disk past the page cache (O_DIRECT) where the "
        "file system allows it: storing costs less CPU (the copy into the cache was its largest "
        "cost) and does not push read files out of the cache; an instance read soon after it was "
        "stored is read from the disk (into the cache in large pieces, see services/retrieve.py).",
    )
    send_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDRs) 'send to my system' may reach although they are not public "
        "(loopback, private, link-local, unique-local); by default only public addresses are reached.",
    )
    viewer_dir: Path | None = Field(
        default=None, description="The prepared OHIF viewer (default: var/ohif/viewer of the checkout)."
    )
    bulkdata_threshold: int = 1024
    # reconciliation of imported (outside) studies (issue 6)
    import_sources: dict[str, ImportSourceSetting] = Field(
        default_factory=dict,
        description="Sources of outside studies by name, besides 'imagebridge source add'.",
    )
    reconciliation: ReconciliationSettings = Field(default_factory=ReconciliationSettings)
    ehr: EhrSettings | None = Field(
        default=None, description="Integrated mode: an outside EHR issues and introspects the tokens."
    )

    @field_validator("ae_title")
    @classmethod
    def _ae_title_fits(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 16:
            raise ValueError("an AE title has 1 to 16 characters")
        return value

    @field_validator("send_allowed_networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"send_allowed_networks: '{item}' is not a network like 10.20.0.0/16"
                ) from exc
        return [v.strip() for v in value]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def embedded_index(self) -> bool:
        """The index is this process's own SQLite file (upgraded in place), not a shared server."""
        return self.effective_database_url.startswith("sqlite")

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build settings from a TOML file (if any), the environment, then explicit overrides."""
        values: dict[str, Any] = {}
        if config_file is not None:
            with config_file.open("rb") as fh:
                values.update(tomllib.load(fh))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def normalise_database_url(url: str) -> str:
    """Accept the URLs people type (``postgresql://``) and pick the driver we ship (psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
