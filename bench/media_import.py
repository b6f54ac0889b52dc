"""Throughput of ``imagebridge import`` on a disc-like folder of many small instances (issue 6).

    python -m bench.media_import --instances 10000 --work /tmp/ib-media-bench [--zip] [--dicomdir] [--pixels 16]

Builds ``--instances`` small synthetic CT instances (``tests/factory.py``; 100 per study, 10 per
series) in ``WORK/disc/DICOM/...`` (or a zip of it, or a PDI file set with a DICOMDIR written by
``imagebridge export``), then runs the real command line, ``imagebridge import WORK/disc
--data-dir WORK/data``, in a fresh data directory, and prints instances/s and MB/s measured from
the outside (wall clock of the whole command, start-up included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from pydicom.uid import generate_uid
from tests.factory import make_instance, part10

PER_STUDY, PER_SERIES = 100, 10


def build(folder: Path, count: int, pixels: int = 16) -> int:
    """Write ``count`` instances under ``folder``; returns their total size in bytes."""
    total = 0
    for index in range(count):
        study_no, within = divmod(index, PER_STUDY)
        series_no, instance_no = divmod(within, PER_SERIES)
        if within == 0:
            study, patient = generate_uid(), f"BENCH-{study_no:05d}"
        if instance_no == 0:
            series = generate_uid()
        ds = make_instance(
            study=study,
            series=series,
            pixels=pixels,
            PatientID=patient,
            PatientName=f"Bench^Patient{study_no}",
            StudyID=str(study_no),
            SeriesNumber=series_no + 1,
            InstanceNumber=instance_no + 1,
        )
        path = folder / "DICOM" / f"ST{study_no:06d}" / f"SE{series_no:06d}" / f"IM{instance_no:06d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = part10(ds)
        path.write_bytes(data)
        total += len(data)
    return total


def pdi_of(disc: Path, staging: Path, target: Path) -> None:
    """The folder imported into a staging archive, then written out as one PDI file set."""
    from sqlalchemy import select

    from imagebridge.config import Settings
    from imagebridge.index.schema import studies
    from imagebridge.media import pdi
    from imagebridge.services.archive import open_archive

    run_import(disc, staging)
    archive = open_archive(Settings(data_dir=staging))
    with archive.engine.connect() as conn:
        uids = [row.study_uid for row in conn.execute(select(studies.c.study_uid).order_by(studies.c.pk))]
    pdi.plan(archive, uids, title="Bench disc").write_directory(target)
    archive.close()


def run_import(target: Path, data: Path) -> tuple[float, str]:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "imagebridge", "import", str(target), "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"import failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--pixels", type=int, default=16, help="rows and columns of each instance")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ib-media-bench"))
    parser.add_argument("--zip", action="store_true", help="import a zip of the folder instead")
    parser.add_argument(
        "--dicomdir", action="store_true", help="import a PDI file set (read through its DICOMDIR)"
    )
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    disc = args.work / "disc"
    size = build(disc, args.instances, args.pixels)
    target = disc
    if args.zip:
        target = args.work / "disc.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(disc.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(disc).as_posix())
    if args.dicomdir:
        target = args.work / "pdi"
        pdi_of(disc, args.work / "staging", target)
    seconds, out = run_import(target, args.work / "data")
    print(out)
    print(
        f"{args.instances} instances, {size / 1e6:.1f} MB in {seconds:.1f} s (whole command): "
        f"{args.instances / seconds:.0f} instances/s, {size / seconds / 1e6:.2f} MB/s"
    )


if __name__ == "__main__":
    main()
