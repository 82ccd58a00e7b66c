"""Content-addressed blob cache: datasets in, artifacts and checkpoints out.

Files live at blobs/<sha[:2]>/<sha>. The cache has a byte limit and evicts the
least recently used blobs that no running task holds. Methods block on disk
I/O: the RPC layer calls them through asyncio.to_thread.

An eviction pass lists the whole cache (6 ms with 1,000 blobs, 22 ms with
5,000), so blobs coming in (PutBlob, FetchBlob, a dataset build, a peer fetch,
a worker's artifacts) do not each pay one: the store keeps a running count of
its bytes (the last pass's total plus what came in since) and `evict_if_due`
runs a pass only when that count is over the limit (space is short: the pass
then frees EVICT_HEADROOM below it, so a full cache is not listed again for
every blob) or when the last pass is EVICT_PERIOD old and blobs came since (a
check on what the count cannot see). A pass that could not get under the limit
(the rest pinned by tasks or held by trees in use) is followed by the next one
only EVICT_PERIOD later, or at once after something let go (`released`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol

from tensorfleet_agent.core.digest import blob_relpath
from tensorfleet_agent.core.errors import NotFound, ValidationError

log = logging.getLogger(__name__)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK_BYTES = 1 << 20
MAX_RECEIVED = 200_000  # blobs remembered as received until a dataset mount counts them
LEFTOVER_GRACE = 600.0  # seconds a temporary file of a copy into the cache must be untouched before it is removed
EVICT_PERIOD = 1.0  # seconds: at most one eviction pass this often while blobs come in and space is not short
EVICT_HEADROOM = 256 << 20  # a pass for short space frees this much below the limit (at most a 16th of it)


def check_sha256(value: str, field: str) -> str:
    if not SHA256_RE.match(value):
        raise ValidationError(field, f"must be 64 lowercase hex digits, got {value[:80]!r}")
    return value


class Trees(Protocol):
    """What the cache's eviction asks of the dataset trees hardlinked from it (runtime/datasets.py): a tree's
    blobs cost no disk of their own while it stands, so they go only with it."""

    def held(self) -> frozenset[str]:
        """The blobs the standing trees link (not evicted while they stand)."""
        ...

    def oldest_unused(self) -> tuple[float, str] | None:
        """(last used, key) of the least recently used tree no task uses, or None."""
        ...

    def remove(self, key: str) -> None:
        """Remove that tree (its blobs become evictable)."""
        ...


class BlobWriter:
    """An upload in progress; commit() checks size and digest before the blob becomes visible."""

    def __init__(self, store: BlobStore, sha256: str, size: int) -> None:
        self._store = store
        self.sha256 = sha256
        self.size = size
        self._hasher = hashlib.sha256()
        self._written = 0
        self._tmp = store.root / "incoming" / f"{uuid.uuid4().hex}.part"
        self._tmp.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] | None = self._tmp.open("wb")
        self._expected = True
        store.expect([sha256])  # a peer asking for it meanwhile waits for it (GetPeerBlob)

    def _done(self) -> None:
        if self._expected:
            self._expected = False
            self._store.unexpect([self.sha256])

    def write(self, data: bytes) -> None:
        if self._written + len(data) > self.size:
            self.abort()
            raise ValidationError("data", f"blob is larger than the {self.size} bytes announced in header.size")
        assert self._fh is not None
        self._fh.write(data)
        self._hasher.update(data)
        self._written += len(data)

    def commit(self) -> Path:
        assert self._fh is not None
        try:
            self._fh.close()
            self._fh = None
            if self._written != self.size:
                self._tmp.unlink(missing_ok=True)
                raise ValidationError("header.size", f"announced {self.size} bytes but {self._written} arrived")
            digest = self._hasher.hexdigest()
            if digest != self.sha256:
                self._tmp.unlink(missing_ok=True)
                raise ValidationError("header.sha256", f"content hashes to {digest}, not {self.sha256}")
            return self._store.adopt(self._tmp, digest)
        finally:
            self._done()

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._tmp.unlink(missing_ok=True)
        self._done()


class BlobStore:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        self._pins: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.trees: Trees | None = None  # the dataset trees linked from this cache, set by their owner
        # Blobs that arrived by PutBlob ("controller") or FetchBlob ("store") and no dataset mount has counted yet:
        # a task's DatasetTransfer says where its version's bytes came from (bounded; the oldest forgotten).
        self._received: OrderedDict[str, tuple[str, int]] = OrderedDict()
        # Blobs on their way in (a PutBlob, this agent's own peer fetch): a peer asking for one waits for it.
        self._incoming: Counter[str] = Counter()
        self._arrival = threading.Condition()
        # The throttle of eviction passes (module docstring): one pass at a time; the bytes the last pass left (None:
        # no pass yet) and those adopted since it began (an overcount at worst: a pass then comes early).
        self._evicting = threading.Lock()
        self._listed: int | None = None
        self._added = 0
        self._listed_at = 0.0
        self._stuck = False  # the last pass left the cache over its limit: what is left is pinned or held
        root.mkdir(parents=True, exist_ok=True)
        self.reclaim_leftovers()

    def reclaim_leftovers(self, grace: float = LEFTOVER_GRACE) -> int:
        """Remove what interrupted transfers left (the data dir's lock says no other agent writes here): uploads
        under incoming/, and the temporary files of copies into the cache (`*.part`, and a worker's `.*.tmp`)
        untouched for `grace` seconds (a worker of the previous agent may still be finishing one). Returns how
        many were removed."""
        now, removed = time.time(), 0
        for stale in (self.root / "incoming").glob("*.part"):
            stale.unlink(missing_ok=True)
            removed += 1
        for pattern in ("[0-9a-f][0-9a-f]/*.part", "[0-9a-f][0-9a-f]/.*.tmp"):
            for leftover in self.root.glob(pattern):
                with contextlib.suppress(FileNotFoundError):
                    if now - leftover.stat().st_mtime >= grace:
                        leftover.unlink()
                        removed += 1
        if removed:
            log.info("blob cache: removed %d file(s) interrupted transfers left behind", removed)
        return removed

    def path(self, sha256: str) -> Path:
        return self.root / blob_relpath(sha256)

    def has(self, sha256: str) -> bool:
        return SHA256_RE.match(sha256) is not None and self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not in this agent's cache") from None

    def writer(self, sha256: str, size: int) -> BlobWriter:
        check_sha256(sha256, "header.sha256")
        if size < 0:
            raise ValidationError("header.size", f"must be >= 0, got {size}")
        if size > self.limit_bytes:
            raise ValidationError("header.size", f"{size} bytes exceeds the blob cache limit of {self.limit_bytes}")
        return BlobWriter(self, sha256, size)

    def read(self, sha256: str, offset: int = 0) -> Iterator[bytes]:
        path = self.path(check_sha256(sha256, "sha256"))
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is not in this agent's cache") from None
        self.touch(sha256)
        with fh:
            fh.seek(offset)
            yield from iter(lambda: fh.read(CHUNK_BYTES), b"")

    def touch(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(sha256))

    def adopt_written(self, digests: Sequence[str]) -> None:
        """Blocking: blobs a worker wrote into the cache itself (artifacts, checkpoints), counted in the LRU in the
        order they came, the latest last, and in the cache's bytes, then `evict_if_due`. Their times are set a
        microsecond apart (the file system's clock ticks every few ms: a batch touched with it would tie, and the
        LRU breaks ties by name; st_mtime is a float that cannot tell nanoseconds apart)."""
        now = time.time_ns()
        added = 0
        for k, sha256 in enumerate(digests):
            with contextlib.suppress(FileNotFoundError):
                path = self.path(sha256)
                os.utime(path, ns=(now + 1000 * k, now + 1000 * k))
                added += path.stat().st_size
        self._note_added(added)
        self.evict_if_due()

    def expect(self, digests: Iterable[str]) -> None:
        """These blobs are being written into the cache now (see `wait_for`)."""
        with self._arrival:
            self._incoming.update(digests)

    def unexpect(self, digests: Iterable[str]) -> None:
        with self._arrival:
            self._incoming.subtract(digests)
            self._incoming += Counter()
            self._arrival.notify_all()

    def wait_for(self, sha256: str, timeout: float) -> bool:
        """Whether the blob is here, waiting up to `timeout` while it is on its way in (not at all otherwise)."""
        with self._arrival:
            self._arrival.wait_for(lambda: self.has(sha256) or not self._incoming[sha256], timeout)
            return self.has(sha256)

    async def arrived(self, sha256: str, timeout: float, poll: float = 0.05) -> bool:
        """`wait_for` without holding a thread for the wait (a peer asking for a blob on its way in: many such
        waits at once must not take the event loop's default executor from telemetry and blob writes)."""
        deadline = time.monotonic() + timeout
        while not self.has(sha256):
            if not self.incoming(sha256) or time.monotonic() >= deadline:
                return self.has(sha256)
            await asyncio.sleep(poll)
        return True

    async def announced(self, sha256: str, timeout: float, poll: float = 0.05) -> bool:
        """Whether the blob is here or on its way in within `timeout` (a reader's mount marks its share and what it
        fetches as incoming as it starts: a peer may ask a moment before); polled, no thread held."""
        deadline = time.monotonic() + timeout
        while not (self.has(sha256) or self.incoming(sha256)):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    def await_all(self, digests: Iterable[str], patience: float, stop: threading.Event | None = None) -> list[str]:
        """Wait for these blobs (the controller's share of a dataset version, pushed while the agent fetches the
        rest from peers) while they keep arriving: gives up once none of them came for `patience` seconds, or on
        `stop`. Returns those still missing (an empty list: all here)."""
        waiting = {d for d in digests if not self.has(d)}
        last = time.monotonic()
        with self._arrival:
            while waiting and not (stop is not None and stop.is_set()):
                left = patience - (time.monotonic() - last)
                if left <= 0:
                    break
                self._arrival.wait(min(left, 0.5))
                arrived = {d for d in waiting if self.has(d)}
                if arrived:
                    waiting -= arrived
                    last = time.monotonic()
        return sorted(waiting)

    def incoming(self, sha256: str) -> bool:
        with self._arrival:
            return self._incoming[sha256] > 0

    def note_received(self, sha256: str, size: int, source: str) -> None:
        """A blob arrived from `source` ("controller", "store"); counted by the next dataset mount that uses it."""
        with self._lock:
            self._received[sha256] = (source, size)
            self._received.move_to_end(sha256)
            while len(self._received) > MAX_RECEIVED:
                self._received.popitem(last=False)

    def received(self, digests: Iterable[str], forget: bool = False) -> dict[str, tuple[str, int]]:
        """Of `digests`, those noted as received (and not counted since): digest -> (source, size); `forget`: a
        mount counted them (the next one finds them cached)."""
        with self._lock:
            if forget:
                return {d: got for d in set(digests) if (got := self._received.pop(d, None)) is not None}
            return {d: got for d in set(digests) if (got := self._received.get(d)) is not None}

    def pin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pins.update(digests)

    def unpin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pins.subtract(digests)
            self._pins += Counter()  # drop zero counts
        self.released()

    def released(self) -> None:
        """Something that held blobs let go (an unpin, a dataset tree no task uses now): if the last pass could not
        get under the limit, the next blob's pass for short space comes at once."""
        with self._lock:
            self._stuck = False

    def pinned(self, sha256: str) -> int:
        """How many holders pin this blob now."""
        with self._lock:
            return self._pins[sha256]

    def adopt(self, tmp: Path, digest: str) -> Path:
        """A file the caller wrote under incoming/ and checked hashes to `digest`: rename it into the cache (then
        `evict_if_due`)."""
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = tmp.stat().st_size
        os.replace(tmp, dest)
        with self._arrival:
            self._arrival.notify_all()
        self._note_added(size)
        self.evict_if_due(keep=digest)
        return dest

    def usage(self) -> tuple[int, int]:
        """(blobs, bytes) in the cache now (`tensorfleet agents cache`)."""
        count = total = 0
        for sub in self.root.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for blob in sub.iterdir():
                if blob.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    total += blob.stat().st_size
                    count += 1
        return count, total

    def _note_added(self, nbytes: int) -> None:
        with self._lock:
            self._added += nbytes

    def evict_if_due(self, keep: str | None = None) -> int:
        """What callers that add blobs call: an eviction pass if space is short by the running count (one that
        frees EVICT_HEADROOM below the limit) or one is due (EVICT_PERIOD since the last, blobs added since);
        nothing otherwise. Returns the bytes freed."""
        with self._evicting:  # a pass running now is waited for, then the count it left is looked at
            with self._lock:
                listed, added = self._listed, self._added
                stuck = self._stuck
            due = added > 0 and time.monotonic() - self._listed_at >= EVICT_PERIOD
            if listed is not None and listed + added > self.limit_bytes and (due or not stuck):
                return self._evict(keep, self.limit_bytes - min(EVICT_HEADROOM, self.limit_bytes // 16))
            if listed is None or due:
                return self._evict(keep, self.limit_bytes)
            return 0

    def evict(self, keep: str | None = None) -> int:
        """Delete least-recently-used unpinned blobs until the cache fits its limit. A blob a dataset tree links
        goes only after that tree, which is removed in its own turn of the LRU order (when no task uses it)."""
        with self._evicting:
            return self._evict(keep, self.limit_bytes)

    def _evict(self, keep: str | None, target: int) -> int:
        """One pass (the caller holds _evicting): lists the cache; over the limit, frees down to `target`."""
        with self._lock:
            self._added = 0  # from here a blob adopted counts in the next pass's base, or twice (an overcount)
        self._listed_at = time.monotonic()
        entries = []
        total = 0
        for sub in self.root.iterdir():
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for blob in sub.iterdir():
                if blob.name.startswith("."):
                    continue  # a worker's upload in flight (renamed into place when complete)
                try:
                    st = blob.stat()
                except FileNotFoundError:
                    continue  # evicted or replaced meanwhile
                entries.append((st.st_mtime, blob.name, st.st_size))
                total += st.st_size
        if total <= self.limit_bytes:
            self._listed, self._stuck = total, False
            return 0
        freed = 0
        with self._lock:
            pinned = set(self._pins)
        trees = self.trees
        held: frozenset[str] = trees.held() if trees is not None else frozenset()
        candidates = [e for e in sorted(entries) if e[1] not in pinned and e[1] != keep]
        gone: set[str] = set()
        i = 0  # candidates before i are gone or held; held shrinks only when a tree goes (then look again from 0)
        while total > target:
            while i < len(candidates) and (candidates[i][1] in held or candidates[i][1] in gone):
                i += 1
            oldest = candidates[i] if i < len(candidates) else None
            tree = trees.oldest_unused() if trees is not None else None
            if tree is not None and trees is not None and (oldest is None or tree[0] < oldest[0]):
                trees.remove(tree[1])
                held, i = trees.held(), 0
                log.info("blob cache: removed dataset tree %s", tree[1][:12])
                continue
            if oldest is None:
                break
            _mtime, digest, size = oldest
            gone.add(digest)
            i += 1
            self.path(digest).unlink(missing_ok=True)
            total -= size
            freed += size
            log.info("blob cache: evicted %s (%d bytes)", digest, size)
        with self._lock:
            self._listed, self._stuck = total, total > self.limit_bytes
        return freed
