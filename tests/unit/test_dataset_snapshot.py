"""A dataset upload's snapshot (issue 20): every file of a tree, large files as 8 MiB chunks read by byte range,
an unchanged tree not read again, and refusals that name the paths."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent.core.manifest import CHUNK_BYTES, manifest_bytes
from tensorfleet_desktop.client.dataset_tree import DatasetError, DatasetSnapshot, snapshot_dataset
from tensorfleet_desktop.client.dataset_upload import UPLOAD_CHUNK, batches, piece_parts
from tensorfleet_desktop.project import hash_cache


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)  # files made by the test are remembered at once


def _tree(root: Path) -> Path:
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / "cats" / "a.png").write_bytes(b"cat")
    (root / "dogs" / "b.png").write_bytes(b"dog")
    (root / "dogs" / "copy.png").write_bytes(b"cat")  # the same content: one blob
    (root / "shard.bin").write_bytes(os.urandom(2 * CHUNK_BYTES + 123))
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / ".gitignore").write_text("*.png\n")  # no ignore rules for a dataset: the .png files stay
    return root


def _snap(path: Path, cache: Path) -> DatasetSnapshot:
    return snapshot_dataset(path, cache_dir=cache)


def test_a_tree_is_every_file_with_large_files_in_chunks(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    snap = _snap(root, tmp_path / "cache")
    assert [e.path for e in snap.entries] == [".gitignore", "cats/a.png", "dogs/b.png", "dogs/copy.png", "shard.bin"]
    shard = snap.entries[-1]
    data = (root / "shard.bin").read_bytes()
    assert shard.sha256 == hashlib.sha256(data).hexdigest() and shard.size == len(data)
    assert shard.chunks == tuple(
        hashlib.sha256(data[i : i + CHUNK_BYTES]).hexdigest() for i in range(0, len(data), CHUNK_BYTES)
    )
    assert all(not e.chunks for e in snap.entries[:-1])
    assert snap.id == hashlib.sha256(manifest_bytes(snap.entries)).hexdigest() and snap.hashed_files == 5
    assert len(snap.blobs()) == 3 + 3  # .gitignore, cat (twice), dog; three chunks
    pieces = snap.pieces(snap.blobs())
    assert [(p.path, p.offset, p.size) for p in pieces if p.path == "shard.bin"] == [
        ("shard.bin", 0, CHUNK_BYTES),
        ("shard.bin", CHUNK_BYTES, CHUNK_BYTES),
        ("shard.bin", 2 * CHUNK_BYTES, 123),
    ]
    assert sum(p.size for p in pieces) == snap.bytes - 3  # the copy is sent once


def test_an_unchanged_tree_is_not_read_again_and_an_edit_changes_one_chunk(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    first = _snap(root, tmp_path / "cache")
    again = _snap(root, tmp_path / "cache")
    assert again.hashed_files == 0 and again.id == first.id and again.entries == first.entries

    with (root / "shard.bin").open("r+b") as fh:  # one byte in the second chunk
        fh.seek(CHUNK_BYTES + 5)
        byte = fh.read(1)
        fh.seek(CHUNK_BYTES + 5)
        fh.write(bytes([byte[0] ^ 0xFF]))
    edited = _snap(root, tmp_path / "cache")
    assert edited.hashed_files == 1 and edited.id != first.id
    new = edited.blobs() - first.blobs()
    assert [(p.offset, p.size) for p in edited.pieces(new)] == [(CHUNK_BYTES, CHUNK_BYTES)]


def test_one_file_is_a_version_of_that_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "train.csv").write_text("a,b\n1,2\n")
    os.symlink(tmp_path / "dir" / "train.csv", tmp_path / "latest.csv")
    snap = _snap(tmp_path / "latest.csv", tmp_path / "cache")
    assert [(e.path, e.size) for e in snap.entries] == [("latest.csv", 8)]
    assert [p.source for p in snap.pieces(snap.blobs())] == [tmp_path / "dir" / "train.csv"]


def test_links_are_followed_and_broken_ones_and_loops_are_named(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("x")
    os.symlink(tmp_path / "outside", root / "ext")  # outside the tree: its content is the dataset's
    (root / "sub" / "y.txt").write_text("y")
    assert [e.path for e in _snap(root, tmp_path / "cache").entries] == ["ext/x.txt", "sub/y.txt"]

    os.symlink(root / "nowhere", root / "gone.txt")
    os.symlink(root, root / "sub" / "up")
    with pytest.raises(DatasetError) as caught:
        _snap(root, tmp_path / "cache")
    assert "broken symlinks: gone.txt" in str(caught.value) and "symlink loops: sub/up" in str(caught.value)

    with pytest.raises(DatasetError, match="does not exist"):
        _snap(tmp_path / "missing", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no file"):
        _snap(tmp_path / "empty", tmp_path / "cache")


def _messages(snap: DatasetSnapshot, failures: list[BaseException], sent: Any = lambda n: None) -> list[Any]:
    async def run() -> list[Any]:
        pieces = snap.pieces(snap.blobs())
        return [m async for m in piece_parts(pieces, (snap.id, b"{}"), failures, sent)]

    return asyncio.run(run())


def test_each_piece_is_its_byte_range_and_a_changed_file_ends_the_stream(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    data = os.urandom(CHUNK_BYTES + UPLOAD_CHUNK + 9)
    (root / "big.bin").write_bytes(data)
    (root / "small.txt").write_text("s")
    snap = _snap(root, tmp_path / "cache")
    failures: list[BaseException] = []
    parts = _messages(snap, failures)
    assert not failures
    shape = [("header", m[1]) if isinstance(m, tuple) else ("data", len(m)) for m in parts]
    assert shape == [
        ("header", CHUNK_BYTES),
        *[("data", UPLOAD_CHUNK)] * (CHUNK_BYTES // UPLOAD_CHUNK),
        ("header", UPLOAD_CHUNK + 9),
        ("data", UPLOAD_CHUNK),
        ("data", 9),
        ("header", 1),
        ("data", 1),
        ("header", 2),  # the manifest, last
        ("data", 2),
    ]
    second = b"".join(parts[2 + CHUNK_BYTES // UPLOAD_CHUNK : 4 + CHUNK_BYTES // UPLOAD_CHUNK])
    assert second == data[CHUNK_BYTES:]

    with (root / "big.bin").open("r+b") as fh:  # same size, other bytes in the second chunk
        fh.seek(CHUNK_BYTES)
        fh.write(b"\0" * 4)
    parts = _messages(snap, failures)
    assert len(failures) == 1 and "big.bin changed while it was uploaded" in str(failures[0])
    assert isinstance(parts[-1], bytes) and sum(isinstance(m, tuple) for m in parts) == 2  # stopped in chunk two


def test_a_caller_giving_up_midway_ends_the_stream_with_its_error(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(3 * UPLOAD_CHUNK))
    snap = _snap(root, tmp_path / "cache")
    failures: list[BaseException] = []

    def sent(n: int) -> None:
        raise KeyError("stop")

    parts = _messages(snap, failures, sent)
    assert [type(m) for m in parts] == [tuple, bytes] and isinstance(failures[0], KeyError)


def test_batches_hold_at_most_their_limit() -> None:
    snap_pieces = [type("P", (), {"size": s})() for s in (5, 5, 1, 20, 3)]
    grouped = batches(snap_pieces, limit=10)
    assert [[p.size for p in g] for g in grouped] == [[5, 5], [1], [20], [3]]
