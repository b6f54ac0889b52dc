"""A minimal DICOMweb client (PS3.18) for the bench: STOW-RS, streamed WADO-RS, QIDO-RS.

Every request asks for ``Accept-Encoding: identity`` so neither server spends time on gzip, and
WADO-RS asks for ``transfer-syntax=*`` so both return the stored bytes without transcoding.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
ACCEPT_JPEG = "image/jpeg"
ACCEPT_JSON = "application/dicom+json"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
READ_TIMEOUT_S = 600.0


class RequestFailed(RuntimeError):
    """A DICOMweb request did not succeed; the text is short enough for a table cell."""


def client(headers: Mapping[str, str] | None = None) -> httpx.Client:
    """An httpx client; ``headers`` (a server's ``Authorization``) go on every request."""
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=10.0)
    return httpx.Client(timeout=timeout, headers={"Accept-Encoding": "identity", **(headers or {})})


def _check(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise RequestFailed(
            f"HTTP {response.status_code} on {response.request.method} {short_path(response)}"
        )


def short_path(response: httpx.Response) -> str:
    """The path after its last UID, e.g. ``…/frames/9``, so an error fits in a table cell."""
    parts = response.request.url.path.split("/")
    uids = [i for i, part in enumerate(parts) if part[:1].isdigit() and "." in part]
    return "/".join(["…", *parts[uids[-1] + 1 :]]) if uids else "/".join(parts)


def multipart(parts: Sequence[bytes]) -> tuple[list[bytes], str]:
    """A multipart/related body (as a list of chunks) and its Content-Type (PS3.18 §8.6.1.2)."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    chunks: list[bytes] = []
    for part in parts:
        chunks += [head, part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return chunks, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(http: httpx.Client, root: str, parts: Sequence[bytes]) -> None:
    """POST one STOW-RS request; it counts only if every instance is referenced as stored."""
    chunks, content_type = multipart(parts)
    response = http.post(
        f"{root}/studies",
        content=b"".join(chunks),
        headers={"Content-Type": content_type, "Accept": ACCEPT_JSON},
    )
    _check(response)
    stored = _sequence_length(response, REFERENCED_SOP_SEQUENCE)
    failed = _sequence_length(response, FAILED_SOP_SEQUENCE)
    if failed or stored != len(parts):
        raise RequestFailed(f"STOW-RS stored {stored} of {len(parts)} instances ({failed} failed)")


def _sequence_length(response: httpx.Response, tag: str) -> int:
    """Items of a sequence in a STOW-RS response (PS3.18 §10.5.3); 0 when absent or unreadable."""
    try:
        body = response.json()
    except ValueError:
        return 0
    values = body.get(tag, {}).get("Value", []) if isinstance(body, dict) else []
    return len(values) if isinstance(values, list) else 0


@dataclass(frozen=True)
class StowBatch:
    """Instances for one STOW-RS request, in memory or as files read by the sending worker."""

    parts: Sequence[bytes] = ()
    paths: Sequence[Path] = ()

    def load(self) -> Sequence[bytes]:
        return self.parts or [p.read_bytes() for p in self.paths]


def stow_concurrently(
    root: str,
    batches: Iterable[StowBatch],
    clients: int,
    max_seconds: float = 3600.0,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send the batches over ``clients`` concurrent connections; the first failure stops all."""
    pending = iter(batches)
    lock, failed = threading.Lock(), threading.Event()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        with client(headers) as http:
            while not failed.is_set():
                with lock:
                    batch = next(pending, None)
                if batch is None:
                    return
                if time.monotonic() > deadline:
                    failed.set()
                    raise RequestFailed(f"STOW-RS load stopped after {max_seconds:.0f}s")
                try:
                    stow(http, root, batch.load())
                except Exception:
                    failed.set()
                    raise

    pool = ThreadPoolExecutor(max_workers=clients)
    try:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    except BaseException:  # also Ctrl-C: let the workers stop after their current request
        failed.set()
        raise
    finally:
        pool.shutdown(wait=True)


def get_streamed(http: httpx.Client, url: str, accept: str) -> int:
    """GET and count the response bytes as they arrive, keeping none of them."""
    received = 0
    with http.stream("GET", url, headers={"Accept": accept}) as response:
        _check(response)
        for chunk in response.iter_raw():
            received += len(chunk)
    return received


def get(http: httpx.Client, url: str, accept: str) -> bytes:
    response = http.get(url, headers={"Accept": accept})
    _check(response)
    if not response.content:
        raise RequestFailed(f"empty body on GET {response.request.url.path}")
    return response.content


def query_string(params: dict[str, str]) -> str:
    """Encode like a browser's ``encodeURIComponent``: ``*`` stays literal.

    Orthanc's DICOMweb plugin 1.7 does not percent-decode QIDO-RS values, so ``%2A`` would be
    matched literally there; queries therefore also avoid characters that need escaping.
    """
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='*-_.!~()')}" for k, v in params.items())


def qido(http: httpx.Client, url: str, params: dict[str, str]) -> list[object]:
    response = http.get(f"{url}?{query_string(params)}", headers={"Accept": ACCEPT_JSON})
    _check(response)
    if response.status_code == 204 or not response.content:
        return []
    body = response.json()
    if not isinstance(body, list):
        raise RequestFailed(f"QIDO-RS answered {type(body).__name__}, not a JSON array")
    return body
