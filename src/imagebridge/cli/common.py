"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import Engine

from imagebridge.config import Settings
from imagebridge.index import db

console = Console()
err_console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where blobs and the embedded index live.", envvar="IMAGEBRIDGE_DATA_DIR"
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql://user@host/db to keep the index in PostgreSQL.",
        envvar="IMAGEBRIDGE_DATABASE_URL",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config", help="A TOML settings file.", envvar="IMAGEBRIDGE_CONFIG", exists=True, dir_okay=False
    ),
]


def settings(config: Path | None = None, **overrides: object) -> Settings:
    try:
        return Settings.load(config, **overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        fail(f"invalid settings: {problems}")
    except OSError as exc:
        fail(f"cannot read settings file: {exc}")
    raise AssertionError("unreachable")


def open_index(settings: Settings) -> Engine:
    """The index engine for a command; an embedded index is created or upgraded in place, a
    shared PostgreSQL index is upgraded deliberately with `imagebridge db upgrade`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        engine = db.make_engine(settings.effective_database_url)
        if settings.embedded_index:
            db.upgrade(engine)
    except Exception as exc:  # the database may be down or the URL wrong
        fail(f"cannot open the index ({type(exc).__name__}): {str(exc).splitlines()[0]}")
    return engine


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def setup_logging(verbose: bool) -> None:
    """Log lines to stderr; pydicom's warnings about odd values go to the log, at INFO."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.INFO if verbose else logging.ERROR)
    for noisy in ("pydicom", "imagebridge.dicom.dicomjson"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


def os_user() -> str:
    """The operating-system user running the command (for the access log), or 'unknown'."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"
