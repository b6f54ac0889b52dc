"""The DICOMweb workloads. Each takes one server and returns named numbers (or raises).

The same function runs against both servers with the same data, UIDs and random frame numbers, so
their numbers compare directly.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

from bench import dicomweb, rawhttp, synth
from bench.measure import Budget, median, percentile, timed, timed_prepared
from bench.memory import MemorySampler
from bench.servers import Server

MB = 1e6


@dataclass(frozen=True)
class Study:
    """The UIDs a read workload needs, and how many instances/bytes the study has."""

    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    total_bytes: int

    @classmethod
    def of(cls, files: synth.StudyFiles) -> Study:
        return cls(files.study_uid, files.series_uid, files.sop_uids, files.total_bytes)

    def series_url(self, root: str) -> str:
        return f"{root}/studies/{self.study_uid}/series/{self.series_uid}"

    def instance_url(self, root: str, index: int) -> str:
        return f"{self.series_url(root)}/instances/{self.sop_uids[index]}"


def latency_stats(durations: list[float]) -> dict[str, float]:
    ms = [d * 1000 for d in durations]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "n": float(len(ms))}


def load(server: Server, files: synth.StudyFiles, batch: int, clients: int) -> None:
    """Store a cached study as it is (setup, untimed), reading its files in the workers."""
    paths = files.files
    batches = [dicomweb.StowBatch(paths=paths[i : i + batch]) for i in range(0, len(paths), batch)]
    dicomweb.stow_concurrently(server.web_root, batches, clients, headers=server.auth)


def stow_study(
    server: Server, ct: synth.StudyFiles, clients: int, batch: int, budget: Budget, first_tag: int
) -> dict[str, float]:
    """STOW-RS of the whole CT, each repetition with fresh UIDs (``first_tag + i``)."""

    def prepare(i: int) -> list[dicomweb.StowBatch]:
        _, parts = synth.retag_study(ct, first_tag + i)
        return [dicomweb.StowBatch(parts=chunk) for chunk in synth.batched(parts, batch)]

    durations = timed_prepared(
        prepare,
        lambda b: dicomweb.stow_concurrently(server.web_root, b, clients, headers=server.auth),
        budget,
    )
    seconds = median(durations)
    return {
        "inst/s": len(ct.files) / seconds,
        "MB/s": ct.total_bytes / MB / seconds,
        "n": float(len(durations)),
    }


def wado_study(server: Server, study: Study, budget: Budget) -> dict[str, float]:
    """Full-study WADO-RS, stored bytes (``transfer-syntax=*``), read with the raw-socket reader
    and checked to be the whole study in multipart framing."""
    url = f"{server.web_root}/studies/{study.study_uid}"
    headers = {"Accept": dicomweb.ACCEPT_DICOM, **server.auth}
    received: list[int] = []

    def fetch(_: int) -> None:
        response = rawhttp.get(url, headers)
        check_study_body(response, study)
        received.append(response.body.size)

    durations = timed(fetch, budget)
    return {"MB/s": received[-1] / MB / median(durations), "n": float(len(durations))}


def check_study_body(response: rawhttp.Response, study: Study) -> None:
    """The body is the study's stored bytes plus multipart framing (PS3.18 §8.7.3.4): it opens
    with a part whose headers say application/dicom, closes with the closing delimiter, and
    is exactly as long as the instances plus one part header and CRLF each plus that delimiter."""
    content_type = response.headers.get("content-type", "")
    boundary = next(
        (
            p.split("=", 1)[1].strip().strip('"')
            for p in content_type.split(";")
            if p.strip().startswith("boundary=")
        ),
        None,
    )
    if boundary is None:
        raise dicomweb.RequestFailed(f"no multipart boundary in Content-Type {content_type[:60]!r}")
    body, delimiter = response.body, b"--" + boundary.encode("latin-1")
    head_end = body.head.find(b"\r\n\r\n") + 4
    part_head = bytes(body.head[:head_end])
    if not part_head.startswith(delimiter + b"\r\n") or b"application/dicom" not in part_head.lower():
        raise dicomweb.RequestFailed(f"the first part's headers are {part_head[:80]!r}")
    closing_at = body.tail.rfind(delimiter + b"--")
    if closing_at < 0 or body.tail[closing_at + len(delimiter) + 2 :].strip():
        raise dicomweb.RequestFailed("the body does not end with the closing boundary")
    framing = len(study.sop_uids) * (len(part_head) + 2) + len(body.tail) - closing_at
    if body.size != study.total_bytes + framing:
        raise dicomweb.RequestFailed(
            f"study response had {body.size} bytes, expected {study.total_bytes} + {framing} of framing"
        )


def series_metadata(server: Server, study: Study, budget: Budget) -> dict[str, float]:
    url = f"{study.series_url(server.web_root)}/metadata"
    with dicomweb.client(server.auth) as http:
        count = len(json.loads(dicomweb.get(http, url, dicomweb.ACCEPT_JSON)))
        if count != len(study.sop_uids):
            raise dicomweb.RequestFailed(f"metadata listed {count} of {len(study.sop_uids)} instances")
        return latency_stats(timed(lambda _: dicomweb.get(http, url, dicomweb.ACCEPT_JSON), budget))


def single_frame(server: Server, study: Study, frames: int, budget: Budget, seed: int) -> dict[str, float]:
    """One random frame (same sequence on both servers) of the multi-frame instance."""
    numbers = random.Random(seed)
    frame_bytes = synth.SIZE * synth.SIZE * 2
    base = f"{study.instance_url(server.web_root, 0)}/frames"

    def fetch(_: int) -> None:
        body = dicomweb.get(http, f"{base}/{numbers.randint(1, frames)}", dicomweb.ACCEPT_FRAMES)
        if len(body) < frame_bytes:
            raise dicomweb.RequestFailed(f"frame response has {len(body)} bytes, expected ≥{frame_bytes}")

    with dicomweb.client(server.auth) as http:
        return latency_stats(timed(fetch, budget))


def rendered(server: Server, study: Study, budget: Budget) -> dict[str, float]:
    """A rendered JPEG of the middle CT slice."""
    url = f"{study.instance_url(server.web_root, len(study.sop_uids) // 2)}/rendered"

    def fetch(_: int) -> None:
        if not dicomweb.get(http, url, dicomweb.ACCEPT_JPEG).startswith(b"\xff\xd8"):
            raise dicomweb.RequestFailed("rendered response is not a JPEG")

    with dicomweb.client(server.auth) as http:
        return latency_stats(timed(fetch, budget))


def qido_query(server: Server, params: dict[str, str], expected: int, budget: Budget) -> dict[str, float]:
    """Latency of one study-level QIDO-RS query; the first answer must have ``expected`` studies."""
    url = f"{server.web_root}/studies"
    with dicomweb.client(server.auth) as http:
        found = len(dicomweb.qido(http, url, params))
        if found != expected:
            raise dicomweb.RequestFailed(f"found {found} studies, expected {expected}")
        return latency_stats(timed(lambda _: dicomweb.qido(http, url, params), budget))


def load_tiny(
    server: Server, parts: list[bytes], batch: int, clients: int, max_seconds: float
) -> dict[str, float]:
    """Concurrent STOW-RS of many tiny instances in multi-instance batches (QIDO setup)."""
    batches = [dicomweb.StowBatch(parts=chunk) for chunk in synth.batched(parts, batch)]
    start = time.perf_counter()
    dicomweb.stow_concurrently(server.web_root, batches, clients, max_seconds, server.auth)
    return {"inst/s": len(parts) / (time.perf_counter() - start)}


def retrieve_with_memory(server: Server, study: Study, max_seconds: float) -> dict[str, float]:
    """Peak memory (summed PSS, and summed VmRSS) of the server's process tree while one client
    streams the whole study."""
    url = f"{server.web_root}/studies/{study.study_uid}"
    with dicomweb.client(server.auth) as http, MemorySampler(server.pid, max_seconds) as sampler:
        start = time.perf_counter()
        received = dicomweb.get_streamed(http, url, dicomweb.ACCEPT_DICOM)
        seconds = time.perf_counter() - start
    if received < study.total_bytes:
        raise dicomweb.RequestFailed(f"study response had {received} bytes, expected ≥{study.total_bytes}")
    return {
        "peak MB": sampler.peak / MB,
        "baseline MB": sampler.baseline / MB,
        "peak RSS MB": sampler.peak_rss / MB,
        "MB/s": received / MB / seconds,
    }
