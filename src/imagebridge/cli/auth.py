"""``imagebridge client|user|token``: the administrator's side of the authorization server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine

from imagebridge.auth.clients import ALL, AccessGrant, Client, Clients
from imagebridge.auth.errors import OAuthError
from imagebridge.auth.launches import Launches, launch_url
from imagebridge.auth.registration import client_from_metadata
from imagebridge.auth.scopes import parse
from imagebridge.auth.server import ADMIN_POLICY
from imagebridge.auth.tokens import Grant, Tokens
from imagebridge.auth.users import Role, Users
from imagebridge.cli import common
from imagebridge.cli.common import ConfigFile, DatabaseUrl, DataDir, console
from imagebridge.errors import ImageBridgeError
from imagebridge.fhir.identifiers import patient_identifier, system_of
from imagebridge.fhir.index import FhirIndex
from imagebridge.index.schema import fhir_patient_ids

CLI_CLIENT = "imagebridge-cli"
client_app = typer.Typer(
    help="SMART apps and backend services allowed to ask for tokens.", no_args_is_help=True
)
user_app = typer.Typer(
    help="People who sign in: patients, proxies, clinicians, administrators.", no_args_is_help=True
)
launch_app = typer.Typer(help="EHR launches: open an app for a patient as a clinician.", no_args_is_help=True)

Patients = Annotated[
    list[str] | None,
    typer.Option(
        "--patient", help="A FHIR Patient id, or a Patient ID (MRN) as 'MRN' or 'ISSUER|MRN'. Repeatable."
    ),
]


def install(app: typer.Typer) -> None:
    """Register ``client``, ``user`` and ``token`` on the main command."""
    app.add_typer(client_app, name="client")
    app.add_typer(user_app, name="user")
    app.add_typer(launch_app, name="launch")
    app.command("token")(token)


def _engine(data_dir: Path | None, database_url: str | None, config: Path | None) -> Engine:
    return common.open_index(common.settings(config, data_dir=data_dir, database_url=database_url))


def resolve_patients(engine: Engine, values: list[str]) -> tuple[str, ...]:
    """FHIR Patient ids for what an administrator typed: an id, an MRN, or ISSUER|MRN."""
    index = FhirIndex(engine)
    found: list[str] = []
    for value in values:
        rows = index.patients([fhir_patient_ids.c.fhir_id == value])
        if not rows:
            issuer, bar, mrn = value.rpartition("|")
            query = f"{system_of(issuer)}|{mrn}" if bar and issuer else value
            rows = index.patients(patient_identifier([query]))
        if len(rows) != 1:
            why = "no patient" if not rows else f"{len(rows)} patients (add the issuer: ISSUER|MRN)"
            common.fail(f"'{value}' matches {why} in the archive; import their images first")
        found.append(rows[0].fhir_id)
    return tuple(found)


@client_app.command("add")
def client_add(
    client_id: Annotated[str, typer.Argument(help="The client_id the app or service will use.")],
    name: Annotated[str, typer.Option("--name", help="Shown to users on the consent page.")] = "",
    jwks: Annotated[
        Path | None,
        typer.Option(
            "--jwks",
            help="JSON JWK Set of the client's public keys: makes it confidential (private_key_jwt).",
        ),
    ] = None,
    redirect_uri: Annotated[list[str] | None, typer.Option("--redirect-uri", help="Repeatable.")] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="Scopes it may be granted, e.g. 'system/ImagingStudy.rs'.")
    ] = "",
    patient: Patients = None,
    all_patients: Annotated[
        bool, typer.Option("--all-patients", help="system/ scopes reach every patient.")
    ] = False,
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="Limit system/ access to these Study Instance UIDs. Repeatable."),
    ] = None,
    launch_url: Annotated[
        str,
        typer.Option("--launch-url", help="Where the EHR opens the app (it adds ?iss=...&launch=...)."),
    ] = "",
    pre_approved: Annotated[
        bool,
        typer.Option(
            "--pre-approved", help="The organisation approves the app: EHR launches skip the consent page."
        ),
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Register an app (public, with --redirect-uri) or a backend service (--jwks, --scope system/...)."""
    if launch_url and not launch_url.startswith(("http://", "https://")):
        common.fail(f"--launch-url must be an http(s) URL, not '{launch_url}'")
    engine = _engine(data_dir, database_url, config)
    metadata: dict[str, object] = {"client_name": name or client_id, "scope": ""}
    if redirect_uri:
        metadata["redirect_uris"] = redirect_uri
    if jwks is not None:
        metadata |= {"token_endpoint_auth_method": "private_key_jwt", "jwks": _read_jwks(jwks)}
    try:
        draft = client_from_metadata(metadata)
        parse(scope)
    except OAuthError as exc:
        common.fail(exc.description)
    patients: tuple[str, ...] | str = ALL if all_patients else resolve_patients(engine, patient or [])
    policy = AccessGrant(patients, tuple(study) if study else ALL)
    client = Client(
        client_id,
        draft.name,
        draft.kind,
        draft.redirect_uris,
        draft.jwks,
        parse(scope).text,
        policy,
        launch_url=launch_url,
        pre_approved=pre_approved,
    )
    try:
        Clients(engine).add(client)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"added {client.kind.value} client [bold]{client_id}[/]")


def _read_jwks(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        common.fail(f"cannot read a JWK Set from {path}: {exc}")
    return data if "keys" in data else {"keys": [data]}


@client_app.command("list")
def client_list(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None
) -> None:
    """List registered clients, with what their system/ scopes may reach."""
    clients = Clients(_engine(data_dir, database_url, config)).all()
    if not clients:
        console.print(
            "no clients yet; add one with [bold]imagebridge client add CLIENT_ID --redirect-uri URL[/]"
        )
        return
    table = Table(
        "client_id", "name", "kind", "scopes", "redirect URIs", "launch URL", "pre-approved", "system/ access"
    )
    for c in clients:
        reach = json.dumps(c.policy.to_json()) if c.scope and "system/" in c.scope else ""
        approved = "yes" if c.pre_approved else ""
        table.add_row(
            c.client_id,
            c.name,
            c.kind.value,
            c.scope,
            " ".join(c.redirect_uris),
            c.launch_url,
            approved,
            reach,
        )
    console.print(table)


@client_app.command("approve")
def client_approve(
    client_id: Annotated[str, typer.Argument(help="As `client list` shows it.")],
    withdraw: Annotated[
        bool, typer.Option("--withdraw", help="Withdraw the approval: EHR launches ask for consent again.")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Pre-approve an app for the organisation: a clinician's EHR launch then needs no clicks."""
    try:
        Clients(_engine(data_dir, database_url, config)).approve(client_id, not withdraw)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"{'withdrew the approval of' if withdraw else 'pre-approved'} client [bold]{client_id}[/]")


@client_app.command("remove")
def client_remove(
    client_id: Annotated[str, typer.Argument(help="As `client list` shows it.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Remove a client; its tokens stop working at once."""
    try:
        Clients(_engine(data_dir, database_url, config)).remove(client_id)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"removed client [bold]{client_id}[/]")


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="What the person types on the sign-in page.")],
    role: Annotated[Role, typer.Option("--role", help="patient, proxy, clinician or admin.")],
    patient: Patients = None,
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    password: Annotated[
        str,
        typer.Option(
            "--password",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="IMAGEBRIDGE_USER_PASSWORD",
        ),
    ] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Add a user; a patient is one --patient, a proxy several, a clinician none (every patient) or a list."""
    engine = _engine(data_dir, database_url, config)
    patients = resolve_patients(engine, patient or [])
    try:
        Users(engine).add(username, password, role, display_name=name, patients=patients)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"added {role.value} [bold]{username}[/]")


@user_app.command("password")
def user_password(
    username: Annotated[str, typer.Argument(help="As `user list` shows it.")],
    password: Annotated[
        str,
        typer.Option(
            "--password",
            prompt="New password",
            hide_input=True,
            confirmation_prompt=True,
            envvar="IMAGEBRIDGE_USER_PASSWORD",
        ),
    ] = "",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Set a new password for a user (asked twice, never echoed); the old one stops working."""
    try:
        Users(_engine(data_dir, database_url, config)).set_password(username, password)
    except ImageBridgeError as exc:
        common.fail(exc.reason)
    console.print(f"new password set for [bold]{username}[/]")


@user_app.command("list")
def user_list(data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None) -> None:
    """List users and the patients they may act for."""
    users = Users(_engine(data_dir, database_url, config)).all()
    if not users:
        console.print(
            "no users yet; add one with [bold]imagebridge user add NAME --role patient --patient MRN[/]"
        )
        return
    table = Table("user", "name", "role", "patients")
    for u in users:
        table.add_row(u.username, u.display_name, u.role.value, " ".join(u.patients) or "(all)")
    console.print(table)


def token(
    scope: Annotated[
        str, typer.Option("--scope", help="Space-separated SMART scopes, e.g. 'system/ImagingStudy.rs'.")
    ],
    patient: Annotated[
        str | None, typer.Option("--patient", help="Launch context: a FHIR Patient id or MRN.")
    ] = None,
    lifetime: Annotated[
        int, typer.Option("--lifetime", min=1, max=86400, help="Seconds the token lives.")
    ] = 3600,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Print a bearer token from the local authorization server, for scripts and administrators.

    system/ scopes on it reach every patient; patient/ scopes reach only --patient."""
    try:
        scopes = parse(scope)
    except OAuthError as exc:
        common.fail(exc.description)
    engine = _engine(data_dir, database_url, config)
    context = resolve_patients(engine, [patient])[0] if patient else None
    if "patient" in scopes.levels() and context is None:
        common.fail("patient/ scopes need --patient")
    if "user" in scopes.levels():
        common.fail(
            "user/ scopes belong to a signed-in user; use system/ scopes (or patient/ with --patient)"
        )
    grant = Grant(
        CLI_CLIENT, scopes.text, context, subject=CLI_CLIENT, data={"policy": ADMIN_POLICY.to_json()}
    )
    value, _ = Tokens(engine).issue("access", grant, lifetime)
    typer.echo(value)


@launch_app.command("create")
def launch_create(
    user: Annotated[str, typer.Option("--user", help="The clinician (or administrator) launching the app.")],
    patient: Annotated[str, typer.Option("--patient", help="A FHIR Patient id, or MRN / 'ISSUER|MRN'.")],
    client: Annotated[str, typer.Option("--client", help="The app's client_id; it needs a --launch-url.")],
    encounter: Annotated[
        str | None, typer.Option("--encounter", help="An encounter id to put in the launch context.")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="This server as the app reaches it (default: public_base_url, or host:port)."
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Print the URL that launches CLIENT for PATIENT as USER: {launch URL}?iss=...&launch=... (one use, 5 minutes)."""
    settings = common.settings(config, data_dir=data_dir, database_url=database_url)
    engine = common.open_index(settings)
    found = Users(engine).get(user)
    if found is None or found.role not in (Role.CLINICIAN, Role.ADMIN):
        common.fail(f"'{user}' is not a clinician or administrator; see `imagebridge user list`")
        return
    app = Clients(engine).get(client)
    if app is None:
        common.fail(f"no client '{client}'; see `imagebridge client list`")
        return
    if not app.launch_url:
        common.fail(f"client '{client}' has no launch URL; add it again with --launch-url URL")
    context = resolve_patients(engine, [patient])[0]
    if found.patients and context not in found.patients:
        common.fail(f"'{user}' may not act for patient {patient}")
    if encounter is not None and not re.match(r"^[A-Za-z0-9.-]{1,64}$", encounter):
        common.fail("an encounter id is letters, digits, '-' and '.', at most 64")
    base = (base_url or settings.public_base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    value = Launches(engine).create(app.client_id, found.username, context, encounter)
    typer.echo(launch_url(app.launch_url, f"{base}/fhir", value))
