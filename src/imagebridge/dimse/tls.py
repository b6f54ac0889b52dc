"""DICOM TLS (PS3.15 Annex B.1): server and client SSL contexts from the configured files."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import cast

from imagebridge.config import Settings
from imagebridge.errors import InvalidInput


def server_context(settings: Settings) -> ssl.SSLContext:
    """Present our certificate; require a client certificate when a CA bundle is configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        raise InvalidInput("DICOM TLS needs tls_cert and tls_key in the settings")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(_existing(settings.tls_cert), _existing(settings.tls_key))
    if settings.tls_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=_existing(settings.tls_ca))
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """Verify the peer against ``tls_ca`` (or the system store); present our certificate if we have one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # peers are named by AE title and address, not by DNS name
    if settings.tls_ca is not None:
        context.load_verify_locations(cafile=_existing(settings.tls_ca))
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(_existing(settings.tls_cert), _existing(settings.tls_key))
    return context


def client_args(settings: Settings) -> tuple[ssl.SSLContext, str]:
    """pynetdicom's ``tls_args``: the context and no server hostname (peers have no DNS name check).

    pynetdicom types the hostname as ``str``, but ``ssl`` refuses an empty one: None it is."""
    return client_context(settings), cast(str, None)


def _existing(path: Path) -> str:
    if not path.is_file():
        raise InvalidInput(f"TLS file {path} does not exist")
    return str(path)
