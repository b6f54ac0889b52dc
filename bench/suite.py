"""One benchmark run: both servers, every workload in turn, and the rows of the report.

Each workload runs on imagebridge, then on Orthanc, with the same data. A failure on one server
becomes that server's cell text (the other server's number still counts) and never stops the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console

from bench import dimse, loopback, servers, synth, tiny, workloads
from bench.config import Config
from bench.report import IB, ORTHANC, Better, Row
from bench.servers import DicomPeer, ImagebridgeCli, Server

Result = dict[str, float] | str
MB = 1e6
DIMSE_SEND_TAG = synth.CT_TAG + 9_001


@dataclass(frozen=True)
class Data:
    ct: synth.StudyFiles
    multiframe: synth.StudyFiles
    big: synth.StudyFiles | None


class Suite:
    def __init__(self, cfg: Config, data: Data, work_dir: Path, console: Console) -> None:
        self.cfg, self.data, self.work_dir, self.console = cfg, data, work_dir, console
        self.servers: dict[str, Server] = {}
        self.down: dict[str, str] = {}
        self.broken: dict[tuple[str, str], str] = {}
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.facts: dict[str, str] = {}
        self.ceiling: float | None = None
        self.client_ceiling: float | None = None
        self.scp: dimse.StoreScp | None = None
        self.ib_dimse_problem: str | None = None
        self.started = time.monotonic()
        self.load_at_start = os.getloadavg()
        self.deadline = self.started + cfg.max_minutes * 60

    # --- lifecycle -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:7.1f}s[/dim] {text}", highlight=False)

    def start_servers(self, cli: ImagebridgeCli | None, ib_problem: str | None) -> None:
        peer = self.scp.peer if self.scp else None
        self._start(ORTHANC, lambda: servers.start_orthanc(self.work_dir / "orthanc", peer))
        if cli is None:
            self.down[IB] = ib_problem or "imagebridge is not available"
            return
        with_dimse = self.scp is not None and self.ib_dimse_problem is None
        if with_dimse and self.scp is not None:
            callers = [self.scp.peer, DicomPeer(dimse.CALLING_AET, self.scp.peer.port)]
            self.ib_dimse_problem = servers.imagebridge_add_peers(cli, self.work_dir / IB / "data", callers)
            with_dimse = self.ib_dimse_problem is None
        self._start(
            IB, lambda: servers.start_imagebridge(cli, self.work_dir / IB, with_dimse, self.cfg.ib_workers)
        )

    def _start(self, name: str, start: Callable[[], Server]) -> None:
        try:
            server = start()
        except (servers.ServerError, OSError) as exc:
            self.down[name] = f"did not start: {str(exc).splitlines()[0]}"
            self.notes.append(f"{name} did not start: {exc}")
            self.say(f"[red]{name} did not start[/red]: {exc}")
            return
        self.servers[name] = server
        self.notes += [f"{name}: {note}" for note in server.notes]
        self.say(f"{name} is up at {server.web_root} (pid {server.pid})")

    def stop_servers(self) -> None:
        for name, server in self.servers.items():
            try:
                server.stop()
                self.say(f"stopped {name}")
            except Exception as exc:  # keep stopping the others
                self.console.print(f"[red]could not stop {name} (pid {server.pid}): {exc}[/red]")

    # --- running one workload on both servers ----------------------------------------------------

    def each(
        self,
        what: str,
        fn: Callable[[Server], dict[str, float]],
        needs: tuple[str, ...] = (),
        unavailable: dict[str, str] | None = None,
    ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        for name in (IB, ORTHANC):
            results[name] = self._one(name, what, fn, needs, (unavailable or {}).get(name))
        return results

    def _one(
        self,
        name: str,
        what: str,
        fn: Callable[[Server], dict[str, float]],
        needs: tuple[str, ...],
        unavailable: str | None,
    ) -> Result:
        server = self.servers.get(name)
        reason = (
            unavailable
            or self.down.get(name)
            or next((self.broken[(name, need)] for need in needs if (name, need) in self.broken), None)
        )
        if server is None or reason:
            return reason or "not running"
        if not server.alive():
            return f"server exited ({server.proc.returncode})"
        if time.monotonic() > self.deadline:
            return "skipped: --max-minutes reached"
        self.say(f"{what} on {name}…")
        try:
            result = fn(server)
        except Exception as exc:  # a workload failure is a table cell, not the end of the run
            text = f"error: {exc}" if str(exc) else f"error: {type(exc).__name__}"
            self.say(f"  [red]{text}[/red]")
            return text
        self.say("  " + ", ".join(f"{k} {v:,.1f}" for k, v in result.items()))
        return result

    def add(self, row: Row, results: dict[str, Result], key: str) -> Row:
        """Fill ``row`` with each server's ``results[key]``, or the reason it has none."""
        for name, result in results.items():
            value, note = (result.get(key), "") if isinstance(result, dict) else (None, result)
            if name == IB:
                row.ib, row.ib_note = value, note
            else:
                row.orthanc, row.orthanc_note = value, note
        self.rows.append(row)
        return row

    def setup_load(self, label: str, files: synth.StudyFiles, batch: int) -> None:
        """Store a dataset on both servers; a server that fails is marked broken for it."""
        results = self.each(f"loading {label}", lambda s: self._timed_load(s, files, batch))
        for name, result in results.items():
            if isinstance(result, str):
                self.broken[(name, label)] = f"loading {label} failed: {result}"

    def _timed_load(self, server: Server, files: synth.StudyFiles, batch: int) -> dict[str, float]:
        start = time.perf_counter()
        workloads.load(server, files, batch, self.cfg.clients)
        return {"MB/s": files.total_bytes / MB / (time.perf_counter() - start)}

    # --- workloads -------------------------------------------------------------------------------

    def run_loopback(self) -> None:
        payload = b"".join(self.data.ct.read_all())
        size = f"{len(payload) / MB:,.0f} MB"
        self.say(f"loopback ceiling: the {size} study over TCP on 127.0.0.1…")
        self.ceiling = loopback.ceiling_bytes_per_s(payload)
        self.client_ceiling = loopback.client_ceiling_bytes_per_s(len(payload))
        httpx_ceiling = loopback.client_ceiling_bytes_per_s(len(payload), raw=False)
        self.facts["Loopback ceiling"] = (
            f"{self.ceiling / 1e9:.2f} GB/s (the {size} study over a plain TCP socket between two processes, best of 5)"
        )
        self.facts["Client ceiling"] = (
            f"{self.client_ceiling / 1e9:.2f} GB/s (the bench's raw-socket HTTP reader, which reads the "
            f"WADO-RS study rows, downloading {size} from a bare-socket HTTP server, best of 5); "
            f"httpx, which reads the other rows: {httpx_ceiling / 1e9:.2f} GB/s"
        )
        self.say(
            f"  loopback {self.ceiling / 1e9:.2f} GB/s, raw-socket client {self.client_ceiling / 1e9:.2f} GB/s, "
            f"httpx client {httpx_ceiling / 1e9:.2f} GB/s"
        )

    def run_stow(self) -> None:
        n = len(self.data.ct.files)
        for clients in sorted({1, self.cfg.clients}):
            stow = partial(self._stow, clients=clients, first_tag=synth.CT_TAG + 1000 * clients)
            label = f"STOW-RS {n}-slice CT, {clients} client{'s' if clients > 1 else ''}"
            results = self.each(label, stow)
            self.add(Row(label, "instances/s", Better.HIGHER), results, "inst/s")
            self.add(Row(label, "MB/s", Better.HIGHER), results, "MB/s")

    def _stow(self, server: Server, clients: int, first_tag: int) -> dict[str, float]:
        return workloads.stow_study(
            server, self.data.ct, clients, self.cfg.stow_batch, self.cfg.stow, first_tag
        )

    def run_reads(self) -> None:
        ct, mf, cfg = workloads.Study.of(self.data.ct), workloads.Study.of(self.data.multiframe), self.cfg
        if cfg.runs("wado"):
            label = f"WADO-RS full study ({ct.total_bytes / MB:,.0f} MB)"
            results = self.each(
                label, partial(workloads.wado_study, study=ct, budget=cfg.wado), needs=("ct",)
            )
            self.add(Row(label, "MB/s", Better.HIGHER), results, "MB/s")
            self._ceiling_rows(label, results)
        if cfg.runs("metadata"):
            label = f"Series metadata ({len(ct.sop_uids)} instances)"
            results = self.each(
                label, partial(workloads.series_metadata, study=ct, budget=cfg.latency), needs=("ct",)
            )
            self._latency_rows(label, results, min_ratio=2.0, tag="metadata")
        if cfg.runs("frames"):
            label = f"Single frame of a {cfg.frames}-frame instance"
            frame = partial(
                workloads.single_frame, study=mf, frames=cfg.frames, budget=cfg.latency, seed=cfg.seed
            )
            results = self.each(label, frame, needs=("multiframe",))
            self._latency_rows(label, results, min_ratio=2.0, tag="frame")
        if cfg.runs("rendered"):
            label = "Rendered JPEG of a CT slice"
            results = self.each(
                label, partial(workloads.rendered, study=ct, budget=cfg.latency), needs=("ct",)
            )
            self._latency_rows(label, results, min_ratio=1.0, tag="rendered")

    def _latency_rows(self, label: str, results: dict[str, Result], min_ratio: float, tag: str) -> None:
        for key in ("p50", "p95"):
            self.add(
                Row(label, f"{key} ms", Better.LOWER, min_ratio=min_ratio, tags=frozenset({tag})),
                results,
                key,
            )

    def _ceiling_rows(self, label: str, results: dict[str, Result]) -> None:
        if self.ceiling is not None:
            row = Row(
                label,
                "% of loopback ceiling",
                Better.HIGHER,
                min_ratio=None,
                min_ib=70.0,
                tags=frozenset({"ceiling"}),
            )
            self.add(row, _percent_of(results, self.ceiling), "%")
        if self.client_ceiling is not None:
            row = Row(label, "% of client ceiling", Better.HIGHER, min_ratio=None)
            self.add(row, _percent_of(results, self.client_ceiling), "%")

    def run_dimse(self) -> None:
        n = len(self.data.ct.files)
        # Issue #3 asks for these ratios to be printed; they are not among the targets of #2.
        store_row = Row(f"DIMSE C-STORE {n}-slice CT (dcmsend)", "instances/s", Better.HIGHER, min_ratio=None)
        move_row = Row(f"DIMSE C-MOVE {n}-slice CT to storescp", "instances/s", Better.HIGHER, min_ratio=None)
        missing = dimse.missing_tools()
        if missing or self.scp is None:
            reason = f"DCMTK tools missing: {', '.join(missing)}" if missing else "storescp did not start"
            self.notes.append(f"DIMSE rows skipped: {reason}")
            self.add(store_row, {IB: reason, ORTHANC: reason}, "inst/s")
            return
        unavailable = {IB: f"skipped: {self.ib_dimse_problem}"} if self.ib_dimse_problem else {}
        if self.ib_dimse_problem:
            self.notes.append(f"imagebridge DIMSE rows skipped: {self.ib_dimse_problem}")
        folder, study_uid = self._write_dimse_copy()
        send = partial(dimse.send, folder=folder, study_uid=study_uid, count=n)
        self.add(store_row, self.each(store_row.workload, send, unavailable=unavailable), "inst/s")
        move = partial(dimse.move, scp=self.scp, study_uid=self.data.ct.study_uid, count=n)
        self.add(
            move_row, self.each(move_row.workload, move, needs=("ct",), unavailable=unavailable), "inst/s"
        )

    def _write_dimse_copy(self) -> tuple[Path, str]:
        """The CT with fresh UIDs as files, for dcmsend (the same files go to both servers)."""
        folder = self.work_dir / "dimse-send"
        study_uid, parts = synth.retag_study(self.data.ct, DIMSE_SEND_TAG)
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(parts):
            (folder / f"{i + 1:05d}.dcm").write_bytes(part)
        return folder, study_uid

    def run_memory(self) -> None:
        big = self.data.big
        if big is None:
            return
        size = f"{big.total_bytes / 1e9:.1f} GB"
        self.setup_load("big", big, self.cfg.stow_batch)
        label = f"Streaming a {size} study ({len(big.files)} slices), 1 client"
        stream = partial(workloads.retrieve_with_memory, study=workloads.Study.of(big), max_seconds=900.0)
        results = self.each(label, stream, needs=("big",))
        memory = Row(
            label,
            "peak memory MB (PSS)",
            Better.LOWER,
            min_ratio=None,
            max_ib=300.0,
            tags=frozenset({"memory"}),
        )
        self.add(memory, results, "peak MB")
        # The target of this workload is the memory; its speed is printed for information.
        self.add(Row(label, "MB/s", Better.HIGHER, min_ratio=None), results, "MB/s")
        for name, result in results.items():
            if isinstance(result, dict):
                self.notes.append(
                    f"{name}: PSS {result['baseline MB']:,.0f} MB before streaming the {size} study, peak "
                    f"{result['peak MB']:,.0f} MB; summed VmRSS peak {result['peak RSS MB']:,.0f} MB "
                    "(server process tree, sampled every 20 ms; bench/memory.py says why PSS)"
                )

    def run_qido(self) -> None:
        loaded, rates = 0, dict[str, float]()
        for size in self.cfg.qido_sizes:
            parts = tiny.instances(loaded, size)
            label = f"QIDO setup: STOW-RS of {len(parts):,} tiny instances"
            self._skip_slow_loads(len(parts), rates)
            load = partial(self._load_tiny, parts=parts)
            results = self.each(label, load, needs=("qido",))
            # Setup for the QIDO rows, printed for information (the STOW-RS targets are the CT rows).
            setup = Row(label, f"instances/s, {self.cfg.clients} clients", Better.HIGHER, min_ratio=None)
            self.add(setup, results, "inst/s")
            for name, result in results.items():
                if isinstance(result, str):
                    self.broken.setdefault((name, "qido"), f"tiny instances not loaded: {result}")
                else:
                    rates[name] = result["inst/s"]
            loaded = size
            self._qido_queries(size)

    def _load_tiny(self, server: Server, parts: list[bytes]) -> dict[str, float]:
        limit = self.cfg.qido_load_minutes * 60
        return workloads.load_tiny(server, parts, self.cfg.qido_batch, self.cfg.clients, limit)

    def _skip_slow_loads(self, count: int, rates: dict[str, float]) -> None:
        """Skip a server whose last load rate says this load would exceed --qido-load-minutes."""
        limit = self.cfg.qido_load_minutes
        for name, rate in rates.items():
            minutes = count / rate / 60
            if minutes > limit:
                self.broken.setdefault(
                    (name, "qido"),
                    f"skipped: {count:,} at {rate:,.0f}/s would take {minutes:.0f} min (> --qido-load-minutes {limit:g})",
                )

    def _qido_queries(self, size: int) -> None:
        studies = tiny.studies(size)
        pid = tiny.patient_id(size // 2)
        in_2020 = sum(1 for s in studies if s["study_date"].startswith("2020"))
        queries = [
            ({"PatientName": "MILLER*"}, sum(1 for s in studies if s["name"].startswith("MILLER^"))),
            ({"StudyDate": "20200101-20201231", "limit": "50"}, min(50, in_2020)),
            ({"PatientID": pid}, sum(1 for s in studies if s["pid"] == pid)),
        ]
        for params, expected in queries:
            query = "&".join(f"{k}={v}" for k, v in params.items())
            label = f"QIDO ?{query} ({size:,} indexed)"
            search = partial(workloads.qido_query, params=params, expected=expected, budget=self.cfg.qido)
            self._latency_rows(label, self.each(label, search, needs=("qido",)), min_ratio=1.0, tag="qido")


def _percent_of(results: dict[str, Result], ceiling: float) -> dict[str, Result]:
    return {
        name: {"%": r["MB/s"] * MB / ceiling * 100} if isinstance(r, dict) else r
        for name, r in results.items()
    }
