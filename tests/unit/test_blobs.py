from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tensorfleet_agent.core.errors import NotFound, ValidationError
from tensorfleet_agent.runtime.blobs import BlobStore


def _put(store: BlobStore, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    writer = store.writer(digest, len(data))
    writer.write(data)
    writer.commit()
    return digest


def test_put_read_round_trip(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, limit_bytes=1 << 20)
    data = os.urandom(3000)
    digest = _put(store, data)
    assert store.has(digest) and b"".join(store.read(digest)) == data
    assert b"".join(store.read(digest, offset=1000)) == data[1000:]


def test_wrong_digest_or_size_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, limit_bytes=1 << 20)
    writer = store.writer("0" * 64, 3)
    writer.write(b"abc")
    with pytest.raises(ValidationError, match=r"header\.sha256"):
        writer.commit()
    writer = store.writer(hashlib.sha256(b"abcd").hexdigest(), 3)
    with pytest.raises(ValidationError, match="larger than"):
        writer.write(b"abcd")
    assert not any((tmp_path / "incoming").iterdir())
    with pytest.raises(ValidationError, match="64 lowercase hex"):
        store.writer("xyz", 1)
    with pytest.raises(NotFound):
        list(store.read("1" * 64))


def test_lru_eviction_spares_pinned_and_recent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, limit_bytes=2500)
    a = _put(store, b"a" * 1000)
    b = _put(store, b"b" * 1000)
    os.utime(store.path(a), (1, 1))
    os.utime(store.path(b), (2, 2))
    store.pin([a])
    c = _put(store, b"c" * 1000)  # over the limit: b is the LRU unpinned one
    assert store.has(a) and not store.has(b) and store.has(c)
    store.unpin([a])
    os.utime(store.path(a), (1, 1))
    d = _put(store, b"d" * 1000)
    assert not store.has(a) and store.has(c) and store.has(d)


def test_eviction_ignores_uploads_in_flight(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, limit_bytes=10)
    digest = _put(store, b"x" * 8)
    partial = store.path(digest).parent / f".{digest}.123.tmp"
    partial.write_bytes(b"y" * 100)  # a worker still copying an artifact in
    assert store.evict() == 0
    assert partial.exists() and store.has(digest)


def test_leftovers_of_interrupted_copies_are_reclaimed_at_start(tmp_path: Path) -> None:
    """An agent killed during a copy into its cache leaves *.part (and a worker's .*.tmp) files: the next start
    removes those untouched for the grace period, not a copy that may still be finishing."""
    root = tmp_path / "blobs"
    (root / "ab").mkdir(parents=True)
    (root / "incoming").mkdir()
    old = [root / "ab" / f"{'ab' * 32}.1234.part", root / "ab" / f".{'ab' * 32}.77.tmp", root / "incoming" / "u.part"]
    recent = root / "ab" / f"{'cd' * 32}.99.part"
    blob = root / "ab" / ("ab" * 32)
    hour_ago = os.path.getmtime(tmp_path) - 3600
    for path in (*old, recent, blob):
        path.write_bytes(b"x" * 10)
    for path in (*old, blob):
        os.utime(path, (hour_ago, hour_ago))
    BlobStore(root, 1 << 20)
    assert [p for p in old if p.exists()] == [] and recent.exists() and blob.exists()


def test_blobs_coming_in_list_the_cache_only_when_space_is_short_or_a_pass_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One eviction pass lists the whole cache: a stream of blobs into a roomy cache pays one for the first, then
    none within EVICT_PERIOD; once the running count goes over the limit a pass comes at once and frees some room
    below it, so the next blobs do not each pay one, and the cache never stays over its limit."""
    from tensorfleet_agent.runtime import blobs as blobs_mod

    monkeypatch.setattr(blobs_mod, "EVICT_PERIOD", 3600.0)
    store = BlobStore(tmp_path, limit_bytes=32 * 1000)
    passes: list[int] = []
    real = store._evict

    def counting(keep: str | None, target: int) -> int:
        passes.append(target)
        return real(keep, target)

    monkeypatch.setattr(store, "_evict", counting)
    for i in range(32):
        _put(store, bytes([i]) * 1000)
    assert len(passes) == 1  # the first blob (the count starts from a listing); the rest fit
    for i in range(32, 64):
        _put(store, bytes([i]) * 1000)
        assert store.usage()[1] <= store.limit_bytes
    assert 1 < len(passes) <= 1 + 32 // 2  # a pass frees a 16th of the limit (2 blobs): at most one per 2 blobs
    assert all(t == 30 * 1000 for t in passes[1:])
    passes.clear()
    store.evict()  # an explicit pass frees down to the limit only
    assert passes == [32 * 1000]


def test_a_pass_that_cannot_free_enough_is_not_repeated_for_every_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs pinned by a task (a dataset being mounted) can hold the cache over its limit: the passes then wait for
    EVICT_PERIOD, or for an unpin, instead of listing the cache for every blob that comes."""
    from tensorfleet_agent.runtime import blobs as blobs_mod

    monkeypatch.setattr(blobs_mod, "EVICT_PERIOD", 3600.0)
    store = BlobStore(tmp_path, limit_bytes=3000)
    passes: list[int] = []
    real = store._evict
    monkeypatch.setattr(store, "_evict", lambda keep, target: passes.append(target) or real(keep, target))
    pinned = [hashlib.sha256(bytes([i]) * 1000).hexdigest() for i in range(6)]
    store.pin(pinned)
    for i in range(6):
        _put(store, bytes([i]) * 1000)
    assert all(store.has(d) for d in pinned) and len(passes) <= 2  # the first, and the first over the limit
    store.unpin(pinned)
    _put(store, b"z" * 1000)  # at once after the unpin: back within the limit
    assert store.usage()[1] <= store.limit_bytes
