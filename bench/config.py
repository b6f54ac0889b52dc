"""Command-line options of ``python -m bench.run``, validated into one :class:`Config`."""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Budget

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKLOADS = ("loopback", "stow", "wado", "metadata", "frames", "rendered", "dimse", "memory", "qido")


@dataclass(frozen=True)
class Config:
    quick: bool
    ct_slices: int
    frames: int
    qido_sizes: tuple[int, ...]
    memory_slices: int
    clients: int
    stow_batch: int
    qido_batch: int
    stow: Budget
    wado: Budget
    latency: Budget
    qido: Budget
    skip: frozenset[str]
    cache_dir: Path
    work_dir: Path | None
    keep: bool
    imagebridge: Path
    ib_workers: int
    results: Path
    max_minutes: float
    qido_load_minutes: float
    seed: int

    def runs(self, workload: str) -> bool:
        return workload not in self.skip


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _skip(text: str) -> frozenset[str]:
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = names - set(WORKLOADS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown workload(s) {sorted(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    return names


def _default_imagebridge() -> Path:
    venv = REPO_ROOT / ".venv" / "bin" / "imagebridge"
    found = shutil.which("imagebridge")
    return venv if venv.exists() or found is None else Path(found)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark imagebridge side by side with Debian's Orthanc on 127.0.0.1 and print ratios "
        "(> 1 always means imagebridge is better).",
        epilog=f"Workloads for --skip: {', '.join(WORKLOADS)}. Results: bench/results/latest.md.",
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes and few repetitions: a smoke run (< 2 min)"
    )
    p.add_argument(
        "--ct-slices", type=int, help="slices of the 512x512 16-bit CT series (default 500; quick 60)"
    )
    p.add_argument("--frames", type=int, help="frames of the multi-frame instance (default 200; quick 40)")
    p.add_argument(
        "--qido-sizes",
        type=_sizes,
        help="tiny instances indexed for each QIDO round (default 10000,100000; quick 300,1000)",
    )
    p.add_argument(
        "--memory-slices",
        type=int,
        help="slices of the study streamed for the peak-memory row (default 4000 ≈ 2.1 GB; quick 200)",
    )
    p.add_argument(
        "--clients", type=int, default=4, help="concurrent clients for STOW-RS and loading (default 4)"
    )
    p.add_argument("--stow-batch", type=int, default=25, help="CT instances per STOW-RS request (default 25)")
    p.add_argument(
        "--qido-batch", type=int, default=500, help="tiny instances per STOW-RS request (default 500)"
    )
    p.add_argument("--skip", type=_skip, default=frozenset(), help="comma-separated workloads to leave out")
    p.add_argument(
        "--cache-dir", type=Path, default=BENCH_DIR / ".cache", help="generated data (default bench/.cache)"
    )
    p.add_argument("--work-dir", type=Path, help="parent of the servers' temp dirs (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the servers' temp dirs and logs after the run")
    p.add_argument(
        "--imagebridge", type=Path, default=_default_imagebridge(), help="the imagebridge executable"
    )
    p.add_argument(
        "--ib-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="imagebridge HTTP worker processes (`serve --workers N`; default: one per core, as a "
        "deployment on this machine would run it; forked workers share their imports, see "
        "bench/memory.py)",
    )
    p.add_argument(
        "--results", type=Path, default=BENCH_DIR / "results" / "latest.md", help="Markdown output"
    )
    p.add_argument(
        "--max-minutes", type=float, help="skip remaining workloads after this long (default 35; quick 4)"
    )
    p.add_argument(
        "--qido-load-minutes",
        type=float,
        default=10.0,
        help="skip the next QIDO size on a server whose load would take longer than this (default 10)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed for random frame numbers")
    return p


FULL = {
    "ct_slices": 500,
    "frames": 200,
    "qido_sizes": (10_000, 100_000),
    "memory_slices": 4000,
    "max_minutes": 35.0,
}
QUICK = {"ct_slices": 60, "frames": 40, "qido_sizes": (300, 1_000), "memory_slices": 200, "max_minutes": 4.0}


def parse_args(argv: list[str] | None = None) -> Config:
    args = parser().parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("ct_slices", "frames", "memory_slices", "clients", "stow_batch", "qido_batch", "ib_workers"):
        if getattr(args, key) <= 0:
            parser().error(f"--{key.replace('_', '-')} must be positive")
    quick = bool(args.quick)
    return Config(
        quick=quick,
        ct_slices=args.ct_slices,
        frames=args.frames,
        qido_sizes=args.qido_sizes,
        memory_slices=args.memory_slices,
        clients=args.clients,
        stow_batch=args.stow_batch,
        qido_batch=args.qido_batch,
        stow=Budget(1, 2, 30.0) if quick else Budget(1, 3, 120.0),
        wado=Budget(1, 3, 15.0) if quick else Budget(1, 5, 60.0),
        latency=Budget(2, 15, 5.0) if quick else Budget(3, 50, 30.0),
        qido=Budget(2, 10, 3.0) if quick else Budget(3, 30, 15.0),
        skip=args.skip,
        cache_dir=args.cache_dir,
        work_dir=args.work_dir,
        keep=args.keep,
        imagebridge=args.imagebridge,
        ib_workers=args.ib_workers,
        results=args.results,
        max_minutes=args.max_minutes,
        qido_load_minutes=args.qido_load_minutes,
        seed=args.seed,
    )
