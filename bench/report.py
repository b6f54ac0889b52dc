"""Rows, targets and the final table, printed with rich and written as Markdown.

"ib better by" is always oriented so that > 1 means imagebridge is better: imagebridge / Orthanc
for throughput, Orthanc / imagebridge for latency and memory.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from rich.console import Console
from rich.table import Table

IB, ORTHANC = "imagebridge", "Orthanc"
NOTE_WIDTH = 38


class Better(Enum):
    HIGHER = "higher"
    LOWER = "lower"


@dataclass
class Row:
    """One metric of one workload, measured on both servers (or with a reason why not)."""

    workload: str
    metric: str
    better: Better
    ib: float | None = None
    orthanc: float | None = None
    ib_note: str = ""
    orthanc_note: str = ""
    min_ratio: float | None = 1.0
    min_ib: float | None = None
    max_ib: float | None = None
    tags: frozenset[str] = frozenset()

    @property
    def ratio(self) -> float | None:
        if not self.ib or not self.orthanc:
            return None
        return self.ib / self.orthanc if self.better is Better.HIGHER else self.orthanc / self.ib

    @property
    def absolute(self) -> bool:
        return self.min_ib is not None or self.max_ib is not None

    @property
    def verdict(self) -> str:
        if self.absolute:
            if self.ib is None:
                return "SKIP"
            low_ok = self.min_ib is None or self.ib >= self.min_ib
            return "PASS" if low_ok and (self.max_ib is None or self.ib < self.max_ib) else "FAIL"
        ratio = self.ratio
        if self.min_ratio is None:
            return "info"
        if ratio is None:
            return "SKIP"
        return "PASS" if ratio >= self.min_ratio else "FAIL"

    @property
    def target(self) -> str:
        if self.min_ib is not None:
            return f"ib ≥{self.min_ib:g}"
        if self.max_ib is not None:
            return f"ib <{self.max_ib:g}"
        return "—" if self.min_ratio is None else f"≥{self.min_ratio:g}x"


@dataclass(frozen=True)
class Target:
    name: str
    verdict: str
    detail: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def cell(value: float | None, note: str) -> str:
    if value is not None:
        return fmt(value)
    return note if len(note) <= NOTE_WIDTH else note[: NOTE_WIDTH - 1] + "…"


def ratio_text(row: Row) -> str:
    ratio = row.ratio
    return f"{ratio:.2f}x" if ratio is not None else "—"


def columns(row: Row) -> list[str]:
    return [
        row.workload,
        row.metric,
        cell(row.ib, row.ib_note),
        cell(row.orthanc, row.orthanc_note),
        ratio_text(row),
        row.target,
        row.verdict,
    ]


HEADERS = ["Workload", "Metric", IB, ORTHANC, "ib better by (>1 = ib better)", "Target", "Result"]


def print_table(report: Report, console: Console) -> None:
    table = Table(title="imagebridge vs Orthanc", title_style="bold", show_lines=False)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="right" if 2 <= i <= 4 else "left", overflow="fold")
    for row in report.rows:
        table.add_row(*columns(row))
    console.print(table)
    for target in report.targets:
        style = {"PASS": "green", "FAIL": "red"}.get(target.verdict, "yellow")
        console.print(f"[{style}]{target.verdict:4}[/{style}]  {target.name} — {target.detail}")
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)


def markdown(report: Report) -> str:
    lines = ["# imagebridge vs Orthanc — benchmark", ""]
    lines += [f"- **{key}**: {value}" for key, value in report.facts.items()]
    lines += [
        "",
        "Ratios: *ib better by* = imagebridge/Orthanc for throughput, Orthanc/imagebridge for latency "
        "and memory, so > 1 always means imagebridge is better.",
        "",
    ]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in report.rows:
        values = columns(row)
        values[2], values[3] = _md_cell(row.ib, row.ib_note), _md_cell(row.orthanc, row.orthanc_note)
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
    lines += ["", "## Targets", ""]
    lines += [f"- **{t.verdict}** {t.name} — {t.detail}" for t in report.targets]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _md_cell(value: float | None, note: str) -> str:
    return fmt(value) if value is not None else (f"*{note}*" if note else "")


def write_markdown(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report))


# --- targets ------------------------------------------------------------------------------------


def ratio_target(rows: list[Row], name: str, minimum: float, tag: str | None = None) -> Target:
    """Every chosen row (all ratio rows, or those tagged ``tag``) must reach ``minimum``x."""
    chosen = [
        r for r in rows if r.min_ratio is not None and not r.absolute and (tag is None or tag in r.tags)
    ]
    measured = [r for r in chosen if r.ratio is not None]
    if not measured:
        return Target(name, "SKIP", "no row measured on both servers")
    failed = [r for r in measured if (r.ratio or 0.0) < minimum]
    skipped = len(chosen) - len(measured)
    extra = f"; {skipped} row(s) not measured on both servers" if skipped else ""
    if failed:
        names = ", ".join(f"{r.workload} {r.metric} ({ratio_text(r)})" for r in failed)
        return Target(
            name, "FAIL", f"{len(failed)} of {len(measured)} rows below {minimum:g}x: {names}{extra}"
        )
    worst = min(measured, key=lambda r: r.ratio or 0.0)
    lowest = f"lowest {ratio_text(worst)} ({worst.workload} {worst.metric})"
    return Target(name, "PASS", f"{len(measured)} rows; {lowest}{extra}")


def absolute_target(rows: list[Row], name: str, tag: str) -> Target:
    """The imagebridge value of the row tagged ``tag`` against its own limit."""
    tagged = [r for r in rows if tag in r.tags]
    if not tagged:
        return Target(name, "SKIP", "workload not run")
    row = tagged[0]
    if row.ib is None:
        return Target(name, "SKIP", row.ib_note or "not measured")
    return Target(name, row.verdict, f"{fmt(row.ib)} {row.metric} (target {row.target})")


# --- machine facts ------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    return {
        "CPU": f"{_cpu_model()} — nproc {os.cpu_count()}",
        "Memory": f"{_mem_total_gb():.1f} GB",
        "OS": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0
