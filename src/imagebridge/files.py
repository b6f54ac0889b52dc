"""Small files in the data directory that are written once and then only read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_once(path: Path, text: str) -> str:
    """Put ``text`` at ``path`` unless a file is there already; returns the text that is there.

    Processes starting together on a new data directory (the workers of ``serve --workers N``)
    may each try to make the same file: each writes its own temporary file (mode 0600, fsynced)
    and links it into place, so the first link wins whole and every other process reads the
    winner's text. The folder is fsynced too, so the file survives a crash once this returns."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(name, path)
    except FileExistsError:
        return path.read_text()
    finally:
        os.unlink(name)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return text
