"""The file blob store makes a stored blob durable: the file, its folder and any folder created for it;
the spool takes whatever the kernel writes at a time."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from imagebridge.errors import StorageFailure
from imagebridge.storage import fs
from imagebridge.storage.base import Spool
from imagebridge.storage.fs import FileBlobStore


def _stored(store: FileBlobStore, data: bytes) -> str:
    with store.spool() as spool:
        spool.write(data)
        return store.put(spool)


def _old_store(root: Path) -> FileBlobStore:
    """A store made before ``LAYOUT``: it already holds two-level folders."""
    (root / "00" / "00").mkdir(parents=True)
    store = FileBlobStore(root)
    assert store.levels == 2
    return store


def test_a_new_store_has_one_level_of_256_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    assert store.levels == 1 and (store.root / fs.LAYOUT).read_text() == "1\n"
    assert sorted(p.name for p in store.root.iterdir() if p.is_dir()) == sorted(
        [f"{n:02x}" for n in range(256)] + ["tmp"]
    )
    synced: list[Path] = []
    real = fs._fsync_dir
    monkeypatch.setattr(fs, "_fsync_dir", lambda folder: (synced.append(folder), real(folder)))
    key = _stored(store, b"first")
    # The folder exists: no mkdir, and only its entries change.
    assert synced == [store.root / key[:2]]
    assert (store.root / key[:2] / f"{key}.dcm").read_bytes() == b"first"
    assert list(store.keys()) == [key] and store.exists(key)
    assert FileBlobStore(store.root).levels == 1  # read back from LAYOUT


def test_a_store_made_before_keeps_its_two_levels(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = _old_store(root)
    key = _stored(store, b"old layout")
    assert (root / key[:2] / key[2:4] / f"{key}.dcm").read_bytes() == b"old layout"
    assert (root / fs.LAYOUT).read_text() == "2\n"
    again = FileBlobStore(root)
    assert again.levels == 2 and list(again.keys()) == [key] and again.exists(key)


def test_a_damaged_layout_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / fs.LAYOUT).write_text("3\n")
    with pytest.raises(StorageFailure, match="LAYOUT"):
        FileBlobStore(tmp_path / "blobs")


def _open_store(root: str, start: Barrier, out: Queue[int]) -> None:
    start.wait()
    out.put(FileBlobStore(Path(root)).levels)


def test_processes_opening_a_new_store_together_agree(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, out = context.Barrier(4), context.Queue()
    openers = [
        context.Process(target=_open_store, args=(str(tmp_path / "blobs"), start, out)) for _ in range(4)
    ]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(30)
    assert [opener.exitcode for opener in openers] == [0, 0, 0, 0]
    assert [out.get(timeout=5) for _ in openers] == [1, 1, 1, 1]
    assert not [p for p in (tmp_path / "blobs").iterdir() if p.name.startswith(".")]


def test_put_fsyncs_every_folder_whose_entries_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two levels (a store made before LAYOUT): folders made on the way are made durable too."""
    store = _old_store(tmp_path / "blobs")
    synced: list[Path] = []
    real = fs._fsync_dir
    monkeypatch.setattr(fs, "_fsync_dir", lambda folder: (synced.append(folder), real(folder)))

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
    store = _old_store(tmp_path / "blobs")
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


def test_spool_write_all_survives_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``writev`` may write less than asked (a signal, a nearly full disk): the rest follows,
    in order, and the digest and size are those of all the bytes."""
    chunks: list[bytes | bytearray | memoryview] = [os.urandom(n) for n in (1, 3000, 0, 70_000, 5)]
    chunks += [bytearray(os.urandom(700)) for _ in range(600)]  # more than one writev takes
    chunks.append(memoryview(os.urandom(9000))[100:])
    expected = b"".join(bytes(c) for c in chunks)
    calls: list[int] = []
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        calls.append(len(buffers))
        data = b"".join(bytes(b) for b in buffers)[:4099]
        return real_writev(fd, [data])

    monkeypatch.setattr(os, "writev", short_writev)
    spool = Spool(tmp_path)
    spool.write(b"head")
    spool.write_all(chunks)
    spool.write(b"tail")
    spool.finish()
    assert spool.path.read_bytes() == b"head" + expected + b"tail"
    assert spool.size == len(expected) + 8
    assert spool.digest == hashlib.sha256(b"head" + expected + b"tail").hexdigest()
    assert max(calls) <= 512 and len(calls) > len(expected) // 4099


def test_a_blob_is_a_second_name_of_its_spool_until_the_spool_goes(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    spool = store.spool()
    spool.write(b"bytes")
    key = store.put(spool)
    blob = store.root / key[:2] / f"{key}.dcm"
    assert os.path.samefile(spool.path, blob) and blob.stat().st_nlink == 2
    spool.discard()
    assert blob.read_bytes() == b"bytes" and blob.stat().st_nlink == 1
    assert not list(store.tmp.iterdir())


def test_remove_asks_whether_the_blob_is_in_use_once_it_is_out_of_reach(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    key = _stored(store, b"named by a row")
    seen: list[bool] = []

    def in_use() -> bool:
        seen.append(store.exists(key))
        return True

    assert store.remove(key, in_use) is False
    assert seen == [False], "the index must be asked after the blob is out of reach"
    assert store.exists(key) and store.open(key).read() == b"named by a row"

    def failing() -> bool:
        raise RuntimeError("index unreachable")

    with pytest.raises(RuntimeError):
        store.remove(key, failing)
    assert store.exists(key), "a removal that cannot ask the index keeps the blob"
    assert store.remove(key, lambda: False) is True and not store.exists(key)
    assert store.remove(key, lambda: False) is False  # absent: not an error
    assert not list(store.tmp.iterdir())


def test_ensure_puts_back_a_blob_removed_before_its_row_was_filed(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    spool = store.spool()
    spool.write(b"stored again")
    key = store.put(spool)
    assert store.remove(key, lambda: False) is True  # a delete that saw no row yet
    store.ensure(spool)  # the store has filed its row since
    spool.discard()
    assert store.open(key).read() == b"stored again"
    store.ensure(spool)  # in place: nothing to do, even with the spool gone
    assert store.exists(key)


def test_a_removal_cut_short_is_undone_when_the_store_is_opened(tmp_path: Path) -> None:
    """A process stopped while ``remove`` held a blob out of reach: the next open puts it back
    (the index may name it); one whose name was taken meanwhile is only dropped."""
    store = FileBlobStore(tmp_path / "blobs")
    held, present = _stored(store, b"held"), _stored(store, b"present")
    os.rename(store.root / held[:2] / f"{held}.dcm", store.tmp / f"{held}.0a1b2c3d.removing")
    os.link(store.root / present[:2] / f"{present}.dcm", store.tmp / f"{present}.0a1b2c3d.removing")
    (store.tmp / "stray.removing").write_bytes(b"not a blob")
    again = FileBlobStore(store.root)
    assert again.open(held).read() == b"held" and again.open(present).read() == b"present"
    assert not list(again.tmp.iterdir())


def test_a_removal_whose_blob_another_process_put_back_meanwhile(tmp_path: Path) -> None:
    """Another process opening the store while a removal asks the index puts the held blob back
    (it cannot tell a live removal from a stopped one): the blob stays, named or not (unnamed,
    it is left over as after a stop), and the removal ends without an error."""
    store = FileBlobStore(tmp_path / "blobs")
    key = _stored(store, b"held twice")
    store.remove(key, lambda: FileBlobStore(store.root) is None)
    assert store.open(key).read() == b"held twice"
    assert store.remove(key, lambda: FileBlobStore(store.root) is not None) is False
    assert store.open(key).read() == b"held twice" and not list(store.tmp.iterdir())


def test_a_blob_that_cannot_be_put_back_stays_held_for_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    key = _stored(store, b"named by a row")

    def failing(source: Path, target: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fs, "_link_unless_there", failing)
    with pytest.raises(OSError):
        store.remove(key, lambda: True)
    assert not store.exists(key) and len(list(store.tmp.glob("*.removing"))) == 1
    monkeypatch.undo()
    assert FileBlobStore(store.root).open(key).read() == b"named by a row"


def test_spools_left_by_a_stopped_process_go_when_the_store_is_opened(tmp_path: Path) -> None:
    """A spool untouched for a day is removed at open (a blob put from it keeps its own name);
    a recent one, which a live process may still be writing, and other files stay."""
    store = FileBlobStore(tmp_path / "blobs")
    old = store.spool()
    old.write(b"put, then the process stopped")
    key = store.put(old)  # the spool's name is never unlinked: the process stopped here
    recent = store.spool()
    recent.write(b"still arriving")
    other = store.tmp / "notes.txt"
    other.write_bytes(b"not a spool")
    day_ago = time.time() - fs.STALE_SPOOL_S - 60
    os.utime(old.path, (day_ago, day_ago))
    os.utime(other, (day_ago, day_ago))
    again = FileBlobStore(store.root)
    assert not old.path.exists() and recent.path.exists() and other.exists()
    assert again.open(key).read() == b"put, then the process stopped"
    recent.discard()
