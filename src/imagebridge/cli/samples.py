"""Sample data for ``make run``: pydicom's test files (and pydicom-data's, when installed)."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from imagebridge.cli.common import console
from imagebridge.services import importer
from imagebridge.services.archive import Archive

_MARKER = ".samples-loaded"


def sample_dirs() -> Iterator[Path]:
    """Folders that hold sample files, found locally (no downloads)."""
    for package, sub in (("pydicom", "data/test_files"), ("data_store", "data")):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / sub
            if folder.is_dir():
                yield folder


def load_once(archive: Archive) -> importer.Summary | None:
    marker = archive.settings.data_dir / _MARKER
    if marker.exists():
        return None
    summary = importer.Summary()
    candidates = list(importer.discover(list(sample_dirs()), summary.skipped))
    with console.status(f"loading {len(candidates)} sample files…"):
        for candidate in candidates:
            importer.import_candidate(archive.ingest, candidate, summary)
    marker.write_text("sample data loaded\n")
    console.print(
        f"sample data: {summary.stored} instances stored in {len(summary.studies)} studies; "
        f"{len(summary.skipped)} files are not DICOM"
    )
    for reason, count in refusal_reasons(summary).most_common():
        console.print(f"  {count} refused: {reason}")
    return summary


def refusal_reasons(summary: importer.Summary) -> Counter[str]:
    """Refusals grouped by kind: the sample sets hold many variants of one image under one UID."""
    kinds: Counter[str] = Counter()
    for _name, reason in summary.refused:
        if "already stored as SOP Instance" in reason:
            kinds["a variant of an image already stored under the same SOP Instance UID"] += 1
        else:
            kinds[reason.split(":")[0]] += 1
    return kinds
