"""Full-study retrieval reads stored parts in batches: grouping, framing, and a blob cut short."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from imagebridge.errors import StorageFailure
from imagebridge.index.lookup import StoredInstance
from imagebridge.services import retrieve

STORED = "1.2.840.10008.1.2.1"


class Blobs:
    """The part of a blob store that reading needs, over files in a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, key: str) -> BinaryIO:
        try:
            return (self.root / key).open("rb")
        except FileNotFoundError as exc:
            raise StorageFailure(f"blob {key} is missing from the store") from exc

    def path(self, key: str) -> Path:
        return self.root / key


class RemoteBlobs(Blobs):
    """A store without local paths: only ``open``."""

    def path(self, key: str) -> None:  # type: ignore[override]
        return None


def _rendition(key: str, size: int, syntax: str = STORED) -> retrieve.Rendition:
    instance = StoredInstance(
        "1.2", "1.2.3", f"1.2.3.{key}", "1.2.840.10008.5.1.4.1.1.2", STORED, key, size, 1, None
    )
    return retrieve.Rendition(instance, syntax)


def test_batches_keep_runs_of_stored_parts_under_the_limit_and_conversions_alone() -> None:
    renditions = [_rendition(k, 100) for k in "abc"] + [_rendition("d", 100, "1.2.840.10008.1.2.5")]
    renditions += [_rendition(k, 100) for k in "ef"] + [_rendition("g", 1000)]
    heads = [b"H" * 8] * len(renditions)
    assert retrieve.batches(renditions, heads, limit=250) == [
        range(0, 2),
        range(2, 3),
        range(3, 4),
        range(4, 6),
        range(6, 7),
    ]
    assert retrieve.batches(renditions[:3], heads[:3]) == [range(0, 3)]


def test_read_parts_frames_the_stored_bytes(tmp_path: Path) -> None:
    contents = {"a": b"first instance", "b": b"", "c": b"third" * 1000}
    for key, data in contents.items():
        (tmp_path / key).write_bytes(data)
    renditions = [_rendition(key, len(data)) for key, data in contents.items()]
    heads = [f"--B\r\nContent-Type: application/dicom; n={n}\r\n\r\n".encode() for n in range(3)]
    body = b"".join(retrieve.read_parts(Blobs(tmp_path), renditions, heads, range(3)))
    expected = b"".join(head + data + b"\r\n" for head, data in zip(heads, contents.values(), strict=True))
    assert body == expected


def test_a_blob_shorter_than_indexed_is_a_storage_failure(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"cut short")
    with pytest.raises(StorageFailure, match="indexed"):
        retrieve.read_parts(Blobs(tmp_path), [_rendition("a", 100)], [b"--B\r\n\r\n"], range(1))


@pytest.mark.parametrize("store", [Blobs, RemoteBlobs])
def test_open_parts_opens_each_file_checked_and_closes_all_on_a_failure(
    tmp_path: Path, store: type[Blobs]
) -> None:
    (tmp_path / "a").write_bytes(b"A" * 10)
    (tmp_path / "b").write_bytes(b"B" * 20)
    renditions = [_rendition("a", 10), _rendition("b", 20)]
    files = retrieve.open_parts(store(tmp_path), renditions, range(2))  # type: ignore[arg-type]
    assert [os.pread(f.fileno(), 30, 0) for f in files] == [b"A" * 10, b"B" * 20]
    retrieve.close_all(files)
    assert all(f.fileno() == -1 for f in files)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(StorageFailure, match="20 bytes, 21 indexed"):
        retrieve.open_parts(store(tmp_path), [_rendition("a", 10), _rendition("b", 21)], range(2))  # type: ignore[arg-type]
    with pytest.raises(StorageFailure, match="missing"):
        retrieve.open_parts(store(tmp_path), [_rendition("a", 10), _rendition("c", 1)], range(2))  # type: ignore[arg-type]
    assert len(os.listdir("/proc/self/fd")) == before, "a failed batch left files open"
