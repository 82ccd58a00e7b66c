"""An agent's dataset trees (agent/runtime/datasets.py, issue 20), on a real blob cache in tmp_path: a version is
materialized once, read-only (files 0444, dirs 0555, hardlinks of the cache's blobs), reused, and evictable only
when no task holds it; a chunked file is assembled from its checked chunks; references are fetched from a shared
folder or an http(s) URL, and a changed object fails the task naming it."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes, manifest_id
from tensorfleet_agent.core.types import DatasetMount, ExitCause, TaskSpec
from tensorfleet_agent.core.validation import validate_task_spec
from tensorfleet_agent.rpc import convert
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.datasets import DatasetCache, DatasetFailed


def _put(blobs: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    if not blobs.has(sha):
        writer = blobs.writer(sha, len(data))
        writer.write(data)
        writer.commit()
    return sha


def upload(blobs: BlobStore, files: dict[str, bytes]) -> tuple[DatasetMount, list[ManifestEntry]]:
    """What the controller pushes for an upload: each small file's blob, a large file's chunks, the manifest."""
    entries = []
    for path, data in sorted(files.items()):
        sha = hashlib.sha256(data).hexdigest()
        if len(data) > CHUNK_BYTES:
            chunks = tuple(_put(blobs, data[i : i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES))
            entries.append(ManifestEntry(path, 0o644, sha, len(data), chunks))
        else:
            entries.append(ManifestEntry(path, 0o644, _put(blobs, data), len(data)))
    assert _put(blobs, manifest_bytes(entries)) == manifest_id(entries)
    return DatasetMount("imgs", 1, manifest_id=manifest_id(entries)), entries


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "data" / "blobs", 1 << 30)


@pytest.fixture
def cache(tmp_path: Path, blobs: BlobStore) -> DatasetCache:
    cache = DatasetCache(tmp_path / "data" / "datasets", blobs)
    cache.load()
    return cache


BIG = bytes(range(256)) * (CHUNK_BYTES // 256) + b"tail" * 1000  # two chunks


def test_an_upload_is_materialized_read_only_once_and_reused(cache: DatasetCache, blobs: BlobStore) -> None:
    files = {"cat/1.png": b"meow", "dog/1.png": b"woof", "big.npy": BIG, "readme.txt": b"woof"}
    mount, entries = upload(blobs, files)
    held = cache.acquire(mount)
    assert not held.reused and held.files == 4 and held.bytes == sum(map(len, files.values())) and held.assembled == 1
    assert held.path == cache.root / mount.manifest_id
    for path, data in files.items():
        target = held.path / path
        assert target.read_bytes() == data
        assert stat.S_IMODE(target.stat().st_mode) == 0o444
        sha = hashlib.sha256(data).hexdigest()
        assert os.path.samefile(target, blobs.path(sha))  # a hardlink of the cache's blob: no second copy
    for folder in (held.path, held.path / "cat", held.path / "dog"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o555
    if os.geteuid() != 0:  # root writes through any mode
        with pytest.raises(PermissionError):
            (held.path / "cat" / "1.png").write_bytes(b"changed")
        with pytest.raises(PermissionError):
            (held.path / "new.txt").write_bytes(b"x")
    big = next(e for e in entries if e.chunks)
    assert blobs.has(big.sha256) and not any(blobs.has(c) for c in big.chunks)  # assembled, chunks dropped
    assert mount.manifest_id in cache.held()  # kept with the tree: the controller finds it there next time
    assert "imgs:v1" in held.summary(mount) and "1 chunked file(s) assembled" in held.summary(mount)

    again = cache.acquire(mount)  # a second task: the same tree, nothing rebuilt
    assert again.reused and again.path == held.path and "already on this agent" in again.summary(mount)
    cache.release(held.key)
    cache.release(again.key)
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]  # no build left behind

    restarted = DatasetCache(cache.root, blobs)  # an agent restart keeps the tree
    restarted.load()
    assert restarted.acquire(mount).reused


def test_a_damaged_chunk_is_refused_and_removed(cache: DatasetCache, blobs: BlobStore) -> None:
    mount, entries = upload(blobs, {"big.bin": BIG})
    chunk = entries[0].chunks[1]
    path = blobs.path(chunk)
    path.chmod(0o644)
    path.write_bytes(b"x" * path.stat().st_size)  # bit rot on disk, same size
    with pytest.raises(DatasetFailed) as failed:
        cache.acquire(mount)
    assert failed.value.cause == ExitCause.SETUP
    assert "'big.bin': chunk 2 of 2" in failed.value.message and "damaged" in failed.value.message
    assert not blobs.has(chunk) and not blobs.has(entries[0].sha256)  # fetched again on the next try
    assert not (cache.root / mount.manifest_id).exists()
    assert not list((blobs.root / "incoming").glob("*.part"))

    _put(blobs, BIG[CHUNK_BYTES:])  # the controller sends it again: the retry works
    assert cache.acquire(mount).files == 1


def test_missing_blobs_fail_as_setup_naming_them(cache: DatasetCache, blobs: BlobStore) -> None:
    mount, entries = upload(blobs, {"a.txt": b"alpha"})
    blobs.path(entries[0].sha256).unlink()
    with pytest.raises(DatasetFailed, match=r"imgs:v1: 1 blob\(s\) .* not in this agent's cache") as failed:
        cache.acquire(mount)
    assert failed.value.cause == ExitCause.SETUP
    with pytest.raises(DatasetFailed, match=r"its manifest .* is not in this agent's blob cache"):
        cache.acquire(DatasetMount("imgs", 2, manifest_id="ab" * 32))


def test_a_tree_in_use_stays_and_an_unused_one_is_evicted_with_its_blobs(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs", 3000)
    cache = DatasetCache(tmp_path / "datasets", blobs)
    cache.load()
    mount, _ = upload(blobs, {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000})
    held = cache.acquire(mount)
    _put(blobs, b"c" * 1500)  # over the limit: the tree is in use, so only blobs outside it may go
    assert held.path.is_dir() and (held.path / "a.bin").read_bytes() == b"a" * 1000
    cache.release(held.key)
    _put(blobs, b"d" * 1500)  # over again: the unused tree goes, then its blobs in LRU order
    assert not held.path.exists() and not (cache.root / f"{held.key}.json").exists()
    assert sum(p.stat().st_size for p in blobs.root.glob("??/*")) <= 3000


def test_load_removes_what_a_crash_left(cache: DatasetCache, blobs: BlobStore) -> None:
    mount, _ = upload(blobs, {"a.txt": b"alpha"})
    held = cache.acquire(mount)
    cache.release(held.key)
    (cache.root / ".build-deadbeef" / "sub").mkdir(parents=True)
    (cache.root / ".build-deadbeef" / "sub").chmod(0o555)
    (cache.root / ("cd" * 32)).mkdir()  # a tree without its record
    (cache.root / f"{'ef' * 32}.json").write_text(json.dumps({"blobs": [], "files": 0, "bytes": 0}))  # no tree
    fresh = DatasetCache(cache.root, blobs)
    fresh.load()
    assert sorted(p.name for p in cache.root.iterdir()) == sorted([held.key, f"{held.key}.json"])


# ---- references


def _file_listing(blobs: BlobStore, folder: Path) -> DatasetMount:
    objects = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        rel = path.relative_to(folder).as_posix()
        objects.append({"path": rel, "size": st.st_size, "etag": f"{st.st_mtime_ns}:{st.st_size}", "get": str(path)})
    listing = json.dumps({"url": f"file://{folder}", "objects": objects}).encode()
    return DatasetMount("shared", 1, listing_id=_put(blobs, listing))


def test_a_file_reference_is_copied_in_checked_and_a_changed_file_fails_naming_it(
    cache: DatasetCache, blobs: BlobStore, tmp_path: Path
) -> None:
    share = tmp_path / "nas"
    (share / "train").mkdir(parents=True)
    (share / "train" / "x.csv").write_text("a,b\n1,2\n")
    (share / "y.txt").write_text("why")
    mount = _file_listing(blobs, share)
    held = cache.acquire(mount)
    assert (held.path / "train" / "x.csv").read_text() == "a,b\n1,2\n" and held.fetched_bytes == 11
    assert stat.S_IMODE((held.path / "y.txt").stat().st_mode) == 0o444

    (share / "y.txt").write_text("changed!")  # the share changed after another snapshot was taken
    (share / "train" / "x.csv").unlink()
    (share / "z.txt").write_text("z")
    other = _file_listing(blobs, share)
    (share / "z.txt").write_text("zz")
    with pytest.raises(DatasetFailed) as failed:
        cache.acquire(other)
    assert failed.value.cause == ExitCause.DATASET_CHANGED
    assert "1 file(s)" in failed.value.message and "z.txt" in failed.value.message
    assert "tensorfleet datasets add shared file://" in failed.value.message


class _Objects(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[bytes, str]] = {}

    def do_GET(self) -> None:
        found = self.files.get(self.path)
        if found is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("ETag", f'"{found[1]}"')
        self.send_header("Content-Length", str(len(found[0])))
        self.end_headers()
        self.wfile.write(found[0])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def store() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Objects)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_s3_reference_is_fetched_by_presigned_url_and_a_changed_etag_is_refused(
    cache: DatasetCache, blobs: BlobStore, store: str
) -> None:
    _Objects.files = {"/b/p/a.txt?sig=1": (b"alpha", "e1"), "/b/p/d/b.txt?sig=2": (b"beta", "e2")}
    objects = [
        {"path": "a.txt", "size": 5, "etag": "e1", "get": f"{store}/b/p/a.txt?sig=1"},
        {"path": "d/b.txt", "size": 4, "etag": "e2", "get": f"{store}/b/p/d/b.txt?sig=2"},
    ]
    listing = {"url": "s3://b/p", "objects": objects}
    mount = DatasetMount("bucket", 3, listing_id=_put(blobs, json.dumps(listing).encode()))
    held = cache.acquire(mount)
    assert (held.path / "d" / "b.txt").read_bytes() == b"beta" and held.fetched_bytes == 9
    cache.release(held.key)
    # the same snapshot with new presigned URLs (the next dispatch): the tree is reused, nothing fetched
    listing["objects"] = [dict(o, get=o["get"] + "&again") for o in objects]
    again = cache.acquire(DatasetMount("bucket", 3, listing_id=_put(blobs, json.dumps(listing).encode())))
    assert again.reused and again.path == held.path

    _Objects.files["/b/p/a.txt?sig=1"] = (b"ALPHA", "e9")  # overwritten in the bucket
    changed = dict(listing, objects=[objects[0], dict(objects[1], get=f"{store}/gone")])
    changed["url"] = "s3://b/p2"
    with pytest.raises(DatasetFailed) as failed:
        cache.acquire(DatasetMount("bucket", 4, listing_id=_put(blobs, json.dumps(changed).encode())))
    assert failed.value.cause == ExitCause.DATASET_CHANGED and "2 file(s)" in failed.value.message
    assert "a.txt (ETag e9, the snapshot says e1)" in failed.value.message
    assert "d/b.txt (no longer in the bucket)" in failed.value.message


def test_a_bad_listing_is_refused_with_the_field(cache: DatasetCache, blobs: BlobStore) -> None:
    bad = {"url": "s3://b", "objects": [{"path": "../x", "size": 1, "etag": "", "get": "http://h/x"}]}
    mount = DatasetMount("bucket", 1, listing_id=_put(blobs, json.dumps(bad).encode()))
    with pytest.raises(DatasetFailed, match=r"its listing is invalid: manifest\[0\].path: '../x' holds '..'"):
        cache.acquire(mount)
    bad["objects"] = [{"path": "x", "size": 1, "etag": "", "get": "ftp://h/x"}]
    mount = DatasetMount("bucket", 1, listing_id=_put(blobs, json.dumps(bad).encode()))
    with pytest.raises(DatasetFailed, match=r"listing.objects\[0\].get: must be an http\(s\) URL"):
        cache.acquire(mount)


def test_a_mount_travels_in_the_task_spec_and_bad_ones_are_refused_by_field() -> None:
    spec = TaskSpec("t1", "j1", "noop", dataset_mount=DatasetMount("imgs", 2, manifest_id="ab" * 32))
    back = convert.task_spec_from_pb(convert.task_spec_to_pb(spec))
    assert back.dataset_mount == spec.dataset_mount and validate_task_spec(back).dataset_mount == spec.dataset_mount
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(TaskSpec("t2", "j1", "noop"))).dataset_mount is None
    bad = {
        "spec.dataset_mount.name": DatasetMount("bad name", 1, manifest_id="ab" * 32),
        "spec.dataset_mount.version": DatasetMount("imgs", 0, manifest_id="ab" * 32),
        "spec.dataset_mount.listing_id": DatasetMount("imgs", 1, listing_id="XY"),
    }
    for field, mount in bad.items():
        with pytest.raises(ValidationError) as refused:
            validate_task_spec(TaskSpec("t1", "j1", "noop", dataset_mount=mount))
        assert refused.value.field == field
    with pytest.raises(ValidationError, match="exactly one of manifest_id"):
        validate_task_spec(TaskSpec("t1", "j1", "noop", dataset_mount=DatasetMount("imgs", 1)))
