"""The file blob store makes a stored blob durable: the file, its folder and any folder created for it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imagebridge.storage import fs
from imagebridge.storage.fs import FileBlobStore


def _stored(store: FileBlobStore, data: bytes) -> str:
    spool = store.spool()
    spool.write(data)
    return store.put(spool)


def test_put_fsyncs_every_folder_whose_entries_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = fs._fsync_dir
    monkeypatch.setattr(fs, "_fsync_dir", lambda folder: (synced.append(folder), real(folder)))
    store = FileBlobStore(tmp_path / "blobs")

    key = _stored(store, b"first")
    leaf = store.root / key[:2] / key[2:4]
    # Both levels were new: the leaf (the file's entry), the middle folder (the leaf's entry)
    # and the root (the middle folder's entry).
    assert synced == [leaf, leaf.parent, store.root]
    assert (leaf / f"{key}.dcm").read_bytes() == b"first"

    synced.clear()
    spool = store.spool()
    spool.write(b"first")
    assert store.put(spool) == key  # the same bytes again: the folders exist, only the leaf changes
    assert synced == [leaf]


def test_put_into_an_existing_middle_folder_syncs_it_and_the_leaf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    key = _stored(store, b"one")
    synced: list[Path] = []
    monkeypatch.setattr(fs, "_fsync_dir", synced.append)
    # Find bytes whose key shares the first level but not the second.
    n = 0
    while True:
        candidate = f"two {n}".encode()
        other = hashlib.sha256(candidate).hexdigest()
        if other[:2] == key[:2] and other[2:4] != key[2:4]:
            break
        n += 1
    assert _stored(store, candidate) == other
    leaf = store.root / other[:2] / other[2:4]
    assert synced == [leaf, leaf.parent]
