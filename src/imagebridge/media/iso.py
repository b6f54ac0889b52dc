"""ISO 9660 images of PDI file sets, written with pycdlib (no mount, no external tool).

PS3.12 Annex F (120 mm CD-R) and IHE PDI ask for plain ISO 9660 Level 1 without extensions;
PDI file IDs are already 8.3-safe, so every name is used as it is (``DICOMDIR.;1``,
``README.TXT;1``). Stored blobs are added by path and read once, while the image is written.
"""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import pycdlib

from imagebridge.media.pdi import FileSetPlan, copy_entry


def volume_id(title: str) -> str:
    """ISO 9660 §7.4.1: a volume identifier is at most 32 d-characters (A-Z, 0-9, _)."""
    cleaned = re.sub(r"[^A-Z0-9_]", "", re.sub(r"[\s-]+", "_", title.upper()))
    return cleaned[:32] or "IMAGEBRIDGE"


def write_iso(plan: FileSetPlan, out: Path) -> None:
    """Write the file set as an ISO 9660 Level 1 image at ``out``."""
    image = pycdlib.PyCdlib()
    image.new(interchange_level=1, vol_ident=volume_id(plan.title), app_ident_str="IMAGEBRIDGE")
    directories: set[str] = set()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".iso-") as scratch:
        for number, entry in enumerate(plan.entries):
            parts = entry.name.split("/")
            for depth in range(1, len(parts)):
                directory = "/" + "/".join(parts[:depth])
                if directory not in directories:
                    image.add_directory(directory)
                    directories.add(directory)
            iso_path = "/" + entry.name + (";1" if "." in parts[-1] else ".;1")
            if entry.data is not None:
                image.add_fp(io.BytesIO(entry.data), entry.size, iso_path)
            elif entry.path is not None and not entry.prefix:
                image.add_file(str(entry.path), iso_path)
            else:
                copy = Path(scratch) / f"{number}"
                copy_entry(entry, copy)
                image.add_file(str(copy), iso_path)
        image.write(str(out))
        image.close()
