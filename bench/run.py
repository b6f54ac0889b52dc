"""Benchmark imagebridge side by side with Debian's Orthanc and print the ratios.

Run from the repository root::

    .venv/bin/python -m bench.run            # full run (~20 min on 2 cores)
    .venv/bin/python -m bench.run --quick    # smoke run (< 2 min)

Everything listens on 127.0.0.1 only; both servers are stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import tempfile
import time

import httpx
from rich.console import Console

from bench import dimse, report, servers, synth
from bench.config import REPO_ROOT, Config, parse_args
from bench.report import ORTHANC, Report
from bench.suite import Data, Suite

TARGET_NAMES = {
    "never": "Never slower than Orthanc on any row with a target",
    "metadata": "≥2x Orthanc on series metadata (p50 and p95)",
    "frame": "≥2x Orthanc on single-frame retrieval (p50 and p95)",
    "ceiling": "Full-study WADO-RS ≥70% of the loopback ceiling",
    "memory": "imagebridge peak memory (PSS) < 300 MB while streaming the big study",
}


def prepare_data(cfg: Config, console: Console) -> Data:
    """Generate (or reuse from the cache) every dataset the selected workloads need."""
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with console.status("generating synthetic data (cached in " + str(cfg.cache_dir) + ")…"):
        ct = synth.ct_series(cfg.cache_dir, cfg.ct_slices)
        mf = synth.multiframe(cfg.cache_dir, cfg.frames)
        big = synth.ct_series(cfg.cache_dir, cfg.memory_slices, synth.BIG_TAG) if cfg.runs("memory") else None
    console.print(
        f"data ready in {time.monotonic() - start:.1f}s: CT {len(ct.files)} slices "
        f"({ct.total_bytes / 1e6:,.0f} MB), multi-frame {cfg.frames} frames "
        f"({mf.total_bytes / 1e6:,.0f} MB)"
        + (f", big study {len(big.files)} slices ({big.total_bytes / 1e9:.2f} GB)" if big else ""),
        highlight=False,
    )
    return Data(ct, mf, big)


def probe_imagebridge(cfg: Config) -> tuple[servers.ImagebridgeCli | None, str | None]:
    if not cfg.imagebridge.exists():
        return None, f"{cfg.imagebridge} not found (pip install -e . in the venv)"
    cli = servers.probe_imagebridge(cfg.imagebridge)
    if not cli.serve:
        return None, "`imagebridge serve` is not available yet"
    return cli, None


def run_workloads(suite: Suite, cfg: Config) -> None:
    data = suite.data
    suite.setup_load("ct", data.ct, cfg.stow_batch)
    suite.setup_load("multiframe", data.multiframe, 1)
    steps = [
        ("stow", suite.run_stow),
        ("reads", suite.run_reads),
        ("dimse", suite.run_dimse),
        ("memory", suite.run_memory),
        ("qido", suite.run_qido),
    ]
    for name, step in steps:
        if name == "reads" or cfg.runs(name):
            step()


def collect_facts(suite: Suite, cfg: Config, argv: list[str]) -> dict[str, str]:
    facts = {
        "Date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "Command": "python -m bench.run " + " ".join(argv),
        **report.machine_facts(),
    }
    plugin = suite.facts.pop("Orthanc DICOMweb plugin", "unknown")
    facts["Orthanc"] = (
        f"{servers.orthanc_version()}, DICOMweb plugin {plugin} "
        "(Debian 12 packages; older than upstream Orthanc and its DICOMweb plugin)"
    )
    facts["imagebridge"] = _imagebridge_version()
    facts["Data"] = (
        f"CT {cfg.ct_slices}x512x512 16-bit (explicit VR LE); multi-frame {cfg.frames} frames; "
        f"QIDO sizes {', '.join(f'{n:,}' for n in cfg.qido_sizes)} tiny instances; "
        f"memory study {cfg.memory_slices} slices"
    )
    facts["Repetitions"] = (
        f"STOW {cfg.stow.warmup}+{cfg.stow.reps}, WADO {cfg.wado.warmup}+{cfg.wado.reps}, "
        f"latency {cfg.latency.warmup}+{cfg.latency.reps} (≤{cfg.latency.seconds:g}s), "
        f"QIDO {cfg.qido.warmup}+{cfg.qido.reps} (warm-up+timed); throughput is the median run"
    )
    facts.update(suite.facts)
    start, end = (" / ".join(f"{v:.2f}" for v in load) for load in (suite.load_at_start, os.getloadavg()))
    facts["Load average"] = (
        f"{start} at start, {end} at end (1/5/15 min; other work on the machine skews results)"
    )
    return facts


def _orthanc_plugin_version(suite: Suite) -> str:
    server = suite.servers.get(ORTHANC)
    if server is None:
        return "unknown"
    try:
        info = httpx.get(server.web_root.replace("/dicom-web", "/plugins/dicom-web"), timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return "unknown"
    return str(info.get("Version", "unknown")) if isinstance(info, dict) else "unknown"


def _imagebridge_version() -> str:
    try:
        version = importlib.metadata.version("imagebridge")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{version} (git {commit or 'no commit yet'})"


def build_report(suite: Suite, cfg: Config, argv: list[str]) -> Report:
    rows = suite.rows
    targets = [
        report.ratio_target(rows, TARGET_NAMES["never"], 1.0),
        report.ratio_target(rows, TARGET_NAMES["metadata"], 2.0, tag="metadata"),
        report.ratio_target(rows, TARGET_NAMES["frame"], 2.0, tag="frame"),
        report.absolute_target(rows, TARGET_NAMES["ceiling"], "ceiling"),
        report.absolute_target(rows, TARGET_NAMES["memory"], "memory"),
    ]
    notes = list(suite.notes)
    busy = max(suite.load_at_start[0], os.getloadavg()[0])
    if busy > 0.5 * (os.cpu_count() or 1):
        notes.append(
            f"the machine was busy (1-min load average up to {busy:.1f} on {os.cpu_count()} CPUs): "
            "ratios are noisy, rerun on a quiet machine before trusting a PASS or FAIL"
        )
    notes += [f"{name} not measured: {reason}" for name, reason in suite.down.items()]
    return Report(rows, collect_facts(suite, cfg, argv), notes, targets)


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM both unwind to the ``finally`` that stops the servers."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def run_suite(suite: Suite, cli: servers.ImagebridgeCli | None, ib_problem: str | None) -> bool:
    """Start the servers, run the workloads, always stop the servers; True if interrupted."""
    cfg = suite.cfg
    with contextlib.ExitStack() as stack:
        try:
            if cfg.runs("loopback"):
                suite.run_loopback()
            if cfg.runs("dimse") and not dimse.missing_tools():
                suite.scp = stack.enter_context(dimse.StoreScp(suite.work_dir / "storescp"))
            if cli is not None:
                suite.ib_dimse_problem = cli.dimse_problem
            suite.start_servers(cli, ib_problem)
            suite.facts["Orthanc DICOMweb plugin"] = _orthanc_plugin_version(suite)
            run_workloads(suite, cfg)
        except KeyboardInterrupt:
            suite.console.print(
                "[yellow]interrupted — stopping the servers, then printing what was measured[/yellow]"
            )
            return True
        finally:
            suite.stop_servers()
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _interrupt_on_signals()
    cfg = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    problem = servers.orthanc_problem()
    if problem:
        console.print(f"[red]{problem}[/red]", highlight=False)
        return 2
    data = prepare_data(cfg, console)
    cli, ib_problem = probe_imagebridge(cfg)
    work_dir = Path(tempfile.mkdtemp(prefix="imagebridge-bench-", dir=cfg.work_dir))
    suite = Suite(cfg, data, work_dir, console)
    interrupted = run_suite(suite, cli, ib_problem)
    result = build_report(suite, cfg, argv)
    if interrupted:
        result.notes.append("run interrupted with Ctrl-C; rows after the interruption are missing")
    report.print_table(result, console)
    report.write_markdown(result, cfg.results)
    console.print(f"written to {cfg.results}", highlight=False)
    if cfg.keep:
        console.print(f"server dirs and logs kept in {work_dir}", highlight=False)
    else:
        console.print(f"removing the servers' temp dir {work_dir} (use --keep to keep it)…", highlight=False)
        shutil.rmtree(work_dir, ignore_errors=True)
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
