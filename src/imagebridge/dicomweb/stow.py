"""STOW-RS: store instances (PS3.18 §10.5), streamed part by part into the ingest service."""

from __future__ import annotations

import asyncio
import ctypes
import io
import logging
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from imagebridge import errors
from imagebridge.auth.policy import Decision
from imagebridge.dicom.parse import ParsedInstance
from imagebridge.dicomweb import multipart, warning
from imagebridge.dicomweb.deps import Access, ArchiveDep, BaseUrl, Caller
from imagebridge.fhir.index import fhir_id
from imagebridge.services.ingest import Ingest, Stored
from imagebridge.storage.base import Spool

log = logging.getLogger(__name__)
router = APIRouter(tags=["STOW-RS"])

# PS3.18 Table 10.5.3-2 / PS3.4 Annex B failure reasons
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900
NOT_AUTHORIZED = 0x0124
"""PS3.7 Table C-1 "Refused: Not Authorized": the token may not store this patient's instance."""


@dataclass
class Failure:
    reason: int
    comment: str
    sop_class_uid: str = ""
    sop_uid: str = ""


@dataclass
class Outcomes:
    """What became of each part, reported in the order the parts arrived."""

    _stored: list[tuple[int, Stored]] = field(default_factory=list)
    _failed: list[tuple[int, Failure]] = field(default_factory=list)
    parts: int = 0

    def next_part(self) -> int:
        self.parts += 1
        return self.parts

    def add_stored(self, part: int, stored: Stored) -> None:
        self._stored.append((part, stored))

    def add_failed(self, part: int, failure: Failure) -> None:
        self._failed.append((part, failure))

    @property
    def stored(self) -> list[Stored]:
        return [s for _, s in sorted(self._stored, key=lambda item: item[0])]

    @property
    def failed(self) -> list[Failure]:
        return [f for _, f in sorted(self._failed, key=lambda item: item[0])]


IN_FLIGHT = 8
"""Parts of one request stored at once: their fsyncs and parsing overlap with receiving. A part
spends most of its time waiting on the disk (its write, its fsync, its folders', the index's),
so a connection's rate is about IN_FLIGHT over that wait: 8 stored the bench CT with 4 clients
about 5-10% faster than 4 (driver runs interleaved), 12 no faster than 8. At most
``IN_FLIGHT * (SPOOL_CHUNK + DIRECT_BUFFER)`` bytes of a request wait in memory."""
STORE_THREADS = 32
"""Threads of a process that spool and store parts (requests beyond ``STORE_THREADS / IN_FLIGHT``
at once queue for them)."""

T = TypeVar("T")
_executor: tuple[int, ThreadPoolExecutor] | None = None


def _threads() -> ThreadPoolExecutor:
    """This process's STOW-RS threads (made on first use, so a forked worker makes its own)."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        _executor = (os.getpid(), ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="stow"))
    return _executor[1]


def _in_thread(work: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``work`` on a STOW-RS thread and await it. Plain asyncio rather than anyio's
    ``to_thread``: anyio's per-call bookkeeping (limiter, cancel scope, task group) cost more
    CPU on the event loop than the hand-off itself."""
    return asyncio.get_running_loop().run_in_executor(_threads(), work)


_storing = 0
"""STOW-RS requests of this process being received (one event loop in a worker; tests run
several servers in one process, hence the lock)."""
_storing_lock = threading.Lock()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to ask
    return trim


_trim = _malloc_trim()


def _storing_starts() -> None:
    global _storing
    with _storing_lock:
        _storing += 1


def _stored_all() -> None:
    """A STOW-RS request has stored its parts; when it was the process's last, give the memory
    its threads freed back to the system (glibc ``malloc_trim``, on a STOW-RS thread, not
    awaited). glibc keeps what many threads freed in its heaps; after the bench's 2 GB load
    that was 17 MB per worker process, counted until the next load reused it."""
    global _storing
    with _storing_lock:
        _storing -= 1
        last = _storing == 0
    if last and _trim is not None:
        _threads().submit(_trim, 0)


class _InFlight:
    """The parts of one request being stored: at most ``IN_FLIGHT`` at once, each in a thread.

    A thread that finishes a part wakes the event loop only when the request is waiting on it
    (for a free slot, or for the last parts before it answers): a part finished while the
    request is still reading costs the loop, which receives every request of its process,
    no wake-up, no future and no callbacks."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._running = 0
        self._waiter: asyncio.Future[None] | None = None

    async def start(self, work: Callable[[], None]) -> None:
        """Hand ``work`` to a thread; waits only while all slots are busy."""
        while not self._take_slot():
            await self._wait_while_running(IN_FLIGHT)
        try:
            _threads().submit(self._run, work)
        except BaseException:
            self._finished()
            raise

    async def wait(self) -> None:
        """Until every part handed over has been stored (or refused)."""
        while self._running:
            await self._wait_while_running(1)

    def _take_slot(self) -> bool:
        with self._lock:
            if self._running >= IN_FLIGHT:
                return False
            self._running += 1
            return True

    async def _wait_while_running(self, parts: int) -> None:
        """Until a part finishes, unless fewer than ``parts`` are running already."""
        with self._lock:
            if self._running < parts:
                return
            waiter = self._waiter = self._loop.create_future()
        await waiter

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException:
            log.exception("a STOW-RS part's thread failed")
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._running -= 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def failure_reason(error: errors.ImageBridgeError) -> int:
    if isinstance(error, errors.NotAuthorizedToStore):
        return NOT_AUTHORIZED
    if isinstance(error, errors.InstanceConflict):
        return DUPLICATE_INSTANCE
    if isinstance(error, errors.StudyMismatch):
        return STUDY_MISMATCH
    if isinstance(error, errors.StorageFailure):
        return OUT_OF_RESOURCES
    if isinstance(error, errors.InvalidInput):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE


class _Decisions:
    """The access decisions of one request, by (patient, study): asked once, by one thread,
    while the parts stored at the same time wait for it."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], Decision] = {}
        self._lock = threading.Lock()

    def decide(self, key: tuple[str, str], ask: Callable[[], Decision]) -> Decision:
        with self._lock:
            decision = self._made.get(key)
            if decision is None:
                decision = self._made[key] = ask()
            return decision


class _SpoolPart(multipart.PartWriter):
    """One application/dicom part: spooled to disk as it arrives, stored when it ends.

    The event loop only collects the part's chunks; creating the spool file, writing and
    hashing happen in worker threads, each time ``SPOOL_CHUNK`` bytes have gathered and
    once more when the part ends (an instance smaller than that is written by the thread that
    stores it). File system calls can wait on the journal while other instances are being
    fsynced, and the event loop must not wait with them: it receives every other request.
    The first bytes are also kept (bounded) so that a refused instance can still be
    named by its UIDs in the FailedSOPSequence.
    """

    def __init__(
        self,
        ingest: Ingest,
        study_uid: str | None,
        outcomes: Outcomes,
        limit: int,
        in_flight: _InFlight,
        access: Access,
        decisions: _Decisions,
    ) -> None:
        self.ingest, self.study_uid, self.outcomes, self.limit = ingest, study_uid, outcomes, limit
        self.access, self.decisions = access, decisions
        self.in_flight = in_flight
        self.part = outcomes.next_part()
        self.spool: Spool | None = None
        self.pending: list[bytes | memoryview] = []
        self.pending_size = 0
        self.size = 0
        self.head = bytearray()

    async def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise errors.InvalidInput(f"a part is larger than the configured maximum of {self.limit} bytes")
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= SPOOL_CHUNK:
            await _in_thread(self._spool_pending)

    def _spool_pending(self) -> Spool:
        """Write the gathered chunks to the spool, creating it first (in a worker thread). A
        spool that cannot be written (disk full) is removed and reported as a storage failure."""
        try:
            if self.spool is None:
                self.spool = self.ingest.spool()
            self.spool.write_all(self.pending)
        except OSError as exc:
            if self.spool is not None:
                self.spool.discard()
            raise errors.StorageFailure(f"the instance could not be written: {exc.strerror}") from exc
        finally:
            self.pending.clear()
            self.pending_size = 0
        return self.spool

    async def close(self) -> None:
        """Hand the part to a worker thread and go on reading; waits only when all slots are busy."""
        await self.in_flight.start(self._store)

    def _store(self) -> None:
        """Store the part and note its outcome (in a worker thread)."""
        try:
            stored = self.ingest.store(
                self._spool_pending(), study_uid=self.study_uid, admit=self._admit, head=bytes(self.head)
            )
        except errors.ImageBridgeError as exc:
            self._failed(failure_reason(exc), exc.reason)
            return
        except Exception:
            log.exception("storing a STOW-RS part failed unexpectedly")
            self._failed(PROCESSING_FAILURE, "the instance could not be processed; the server logged why")
            return
        self.outcomes.add_stored(self.part, stored)

    def _admit(self, parsed: ParsedInstance) -> None:
        """Refuse an instance whose patient, or the study it joins, is outside the caller's
        access (create); asked by ingest on its own parse, before anything is written.

        Decided (and audited) once per patient and study in a request: the parts of one
        request are nearly always one study, and asking the policy for each of hundreds of
        slices cost an index query and an audit record per slice."""
        if self.access.anonymous:
            return
        key = (fhir_id(parsed.patient_id, parsed.issuer_of_patient_id), parsed.study_uid)
        if not self.decisions.decide(key, lambda: self.access.may_store(*key)).allowed:
            raise errors.NotAuthorizedToStore(
                "refused: this token may not store instances of this patient or study"
            )

    def _failed(self, reason: int, comment: str) -> None:
        sop_class_uid, sop_uid = identify(bytes(self.head))
        self.outcomes.add_failed(self.part, Failure(reason, comment, sop_class_uid, sop_uid))

    async def abort(self) -> None:
        self.pending.clear()
        if self.spool is not None:
            await _in_thread(self.spool.discard)


SPOOL_CHUNK = 1024 * 1024
"""Bytes of a part gathered in memory before a worker thread writes them to its spool."""
HEAD_BYTES = 64 * 1024
"""How much of a part is kept to name a refused instance; UIDs come long before pixel data."""


def identify(head: bytes) -> tuple[str, str]:
    """The SOP Class and SOP Instance UIDs in the first bytes of a Part 10 object, when readable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                io.BytesIO(head),
                stop_before_pixels=True,
                force=True,
                specific_tags=["SOPClassUID", "SOPInstanceUID"],
            )
        meta = ds.file_meta
        return (
            _uid(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")),
            _uid(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID")),
        )
    except Exception:
        return "", ""


def _uid(value: object) -> str:
    text = str(value or "").strip().rstrip("\x00")
    return text if len(text) <= 64 and text.replace(".", "").isdigit() else ""


class _RefusedPart(multipart.PartWriter):
    """A part we do not store (wrong media type); its body is read and dropped."""

    def __init__(self, outcomes: Outcomes, comment: str) -> None:
        self.outcomes, self.comment = outcomes, comment
        self.part = outcomes.next_part()

    async def write(self, data: bytes | memoryview) -> None:
        return None

    async def close(self) -> None:
        self.outcomes.add_failed(self.part, Failure(CANNOT_UNDERSTAND, self.comment))

    async def abort(self) -> None:
        return None


def _element(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


def response_body(outcomes: Outcomes, base_url: str) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 Table 10.5.3-3) in DICOM JSON."""
    body: dict[str, Any] = {}
    studies = {s.study_uid for s in outcomes.stored}
    if len(studies) == 1:
        body["00081190"] = _element("UR", f"{base_url}/studies/{next(iter(studies))}")
    if outcomes.failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _element("UI", f.sop_class_uid),
                    "00081155": _element("UI", f.sop_uid),
                    "00081197": _element("US", f.reason),
                    "00000902": _element("LO", f.comment[:64]),
                }
                for f in outcomes.failed
            ],
        }
    if outcomes.stored:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _element("UI", s.sop_class_uid),
                    "00081155": _element("UI", s.sop_uid),
                    "00081190": _element(
                        "UR", f"{base_url}/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_uid}"
                    ),
                }
                for s in outcomes.stored
            ],
        }
    return body


def status_of(outcomes: Outcomes) -> int:
    """200 all stored, 202 some failed, 409 none stored (PS3.18 §10.5.3.1)."""
    if not outcomes.failed:
        return 200
    return 202 if outcomes.stored else 409


async def _store(
    request: Request, archive: ArchiveDep, access: Access, base_url: str, study_uid: str | None
) -> JSONResponse:
    request_type = multipart.parse_request_type(request.headers.get("content-type"))
    outcomes = Outcomes()
    limit = archive.settings.max_upload_bytes

    in_flight = _InFlight()
    decisions = _Decisions()
    truncated: errors.InvalidInput | None = None
    unwritable: errors.StorageFailure | None = None

    async def open_part(headers: dict[str, str]) -> multipart.PartWriter:
        media = (
            headers.get("content-type", request_type.part_type or "application/dicom")
            .split(";")[0]
            .strip()
            .lower()
        )
        if media != "application/dicom":
            return _RefusedPart(outcomes, f"part of type {media} refused: only application/dicom is stored")
        return _SpoolPart(archive.ingest, study_uid, outcomes, limit, in_flight, access, decisions)

    _storing_starts()
    try:
        await multipart.read_parts(request.stream(), request_type.boundary, open_part)
    except errors.InvalidInput as exc:
        truncated = exc  # parts already handed over still finish before we answer
    except errors.StorageFailure as exc:
        unwritable = exc  # raised once the parts already handed over have finished
    finally:
        try:
            await in_flight.wait()  # also when the client went away: no part is left half stored
        finally:
            _stored_all()
    if unwritable is not None:
        raise unwritable
    if truncated is not None:
        if not outcomes.stored:
            raise truncated
        outcomes.add_failed(outcomes.parts + 1, Failure(CANNOT_UNDERSTAND, truncated.reason))
    parts = len(outcomes.stored) + len(outcomes.failed)
    if parts == 0:
        raise errors.InvalidInput("the multipart body contains no parts")
    status = status_of(outcomes)
    headers = {}
    if outcomes.failed:
        summary = "; ".join(sorted({f.comment for f in outcomes.failed}))
        headers["Warning"] = warning.header(
            [f"{len(outcomes.failed)} of {parts} instances not stored: {summary}"]
        )
    return JSONResponse(
        response_body(outcomes, base_url),
        status_code=status,
        media_type="application/dicom+json",
        headers=headers,
    )


@router.post("/studies", summary="Store instances")
async def store_instances(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl
) -> JSONResponse:
    return await _store(request, archive, access, base_url, None)


@router.post("/studies/{study}", summary="Store instances of one study")
async def store_study_instances(
    request: Request, archive: ArchiveDep, access: Caller, base_url: BaseUrl, study: str
) -> JSONResponse:
    return await _store(request, archive, access, base_url, study)
