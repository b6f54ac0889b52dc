"""``imagebridge client|user|token``: the administrator's side of the authorization server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine

from imagebridge.auth.clients import ALL, AccessGrant, Client, Clients
from imagebridge.auth.errors import OAuthError
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
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
) -> None:
    """Register an app (public, with --redirect-uri) or a backend service (--jwks, --scope system/...)."""
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
        client_id, draft.name, draft.kind, draft.redirect_uris, draft.jwks, parse(scope).text, policy
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
    table = Table("client_id", "name", "kind", "scopes", "redirect URIs", "system/ access")
    for c in clients:
        reach = json.dumps(c.policy.to_json()) if c.scope and "system/" in c.scope else ""
        table.add_row(c.client_id, c.name, c.kind.value, c.scope, " ".join(c.redirect_uris), reach)
    console.print(table)


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
