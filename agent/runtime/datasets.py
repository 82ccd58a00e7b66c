"""Dataset versions on an agent (issue 20): materialized once per content, read-only, shared by tasks, evictable.

    cache = DatasetCache(data_dir / "datasets", blobs)       # blobs.trees = cache: eviction knows the trees
    cache.load()                                             # at start: leftovers of a crash removed
    held = cache.acquire(mount, stop)                        # blocking (a thread); DatasetFailed(cause, message)
    ... the task runs with TENSORFLEET_DATASET_DIR = held.path ...
    cache.release(held.key)

A version's tree is <datasets>/<key>/: every file a hardlink of its blob in the agent's blob cache (made 0444, so
the blob and every tree share one read-only inode), every directory 0555. The key is the manifest id of an upload,
or for a reference the sha256 of its snapshot (url and each object's path, size and etag; not the presigned URLs,
which change at every dispatch). `<key>.json` beside it lists the blobs it links. A tree is built under
`.build-<uuid>/` and renamed into place after its record is written, so a crash never leaves a half tree under a
key; `load` removes build leftovers, trees without a record and records without a tree.

An upload: its manifest blob and every file blob, or for a file over CHUNK_BYTES its chunk blobs, are in the cache
(the controller pushes what the agent lacks before RunTask). A chunked file is assembled once into the cache as the
whole file: each chunk's sha256 is checked as it is read (a damaged one is removed from the cache and named, so the
next try fetches it again), then the whole file's; its chunk blobs are dropped afterwards unless someone else pins
them or they are also a file of the version.

Peers (phase B): blobs of an upload that this agent lacks and the mount's `peers` hold are fetched from them before
the assembly (runtime/peer_fetch.py: several streams, sha256-checked, a failing peer's blobs resumed from another);
what no peer could give fails the task SETUP naming the blobs (the controller pushes them on the retry). The tree's
DatasetTransfer (HeldDataset.transfer) says where the bytes came from: peers, the controller's pushes and the object
store's fetches noted by the blob cache since the last mount, and what was already here.

A reference: the listing blob is JSON {"url", "objects": [{"path", "size", "etag", "get"}]}. Each object is read
from "get" (a presigned http(s) GET, or an absolute file path on a folder every agent mounts), its size and etag
checked against the snapshot (s3: the response's ETag; file: "mtime_ns:size" before and after the copy), hashed
into the cache, and linked. Objects that changed fail the task with DATASET_CHANGED naming them (permanent: the
version's data is gone; `datasets add` again snapshots a new version). A tree once built holds the snapshot's data,
so later tasks reuse it without asking the store again.

Read-only stops a task's accident, not root (whom 0444 does not stop) nor a task that chmods the file back: such a
task changes the tree and the blob for every later task on this agent, as with workdir.py's hardlinks.

Pins: a tree a task uses is never removed. Unused trees stay until the blob cache is over its limit: its LRU then
removes blobs and trees in one least-recently-used order (BlobStore.evict, via the Trees protocol here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    CHUNK_BYTES,
    MAX_MANIFEST_BYTES,
    MODE_FILE,
    ManifestEntry,
    exchange_order,
    manifest_from_bytes,
    validate_manifest,
)
from tensorfleet_agent.core.types import DatasetMount, DatasetTransfer, ExitCause
from tensorfleet_agent.runtime.blobs import SHA256_RE, BlobStore
from tensorfleet_agent.runtime.peer_fetch import FetchResult, PeerFetch, Want, missing_message
from tensorfleet_agent.runtime.workdir import BlobsMissing, materialize

SHARE_PATIENCE = 60.0  # seconds the controller's share of a version may go with no blob of it arriving (then: fails)

log = logging.getLogger(__name__)

DIR_MODE = 0o555
FILE_MODE = 0o444
_READ = 1 << 20
_TIMEOUT = 60.0
_NO_HASH = "0" * 64  # a reference's entries are validated as a manifest before their content is known


class DatasetFailed(Exception):
    """The version could not be made ready: `cause` is ExitCause.SETUP (worth a retry) or DATASET_CHANGED."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


class Stopped(Exception):
    """The task was cancelled while its dataset was being made ready."""


@dataclasses.dataclass(frozen=True)
class HeldDataset:
    """A tree a task uses until `DatasetCache.release(key)`; what getting it took."""

    key: str
    path: Path
    files: int
    bytes: int
    reused: bool  # the tree was already on this agent
    assembled: int = 0  # chunked files assembled from their chunks
    fetched_bytes: int = 0  # a reference's bytes read from the object store or the shared folder
    seconds: float = 0.0
    peer_bytes: int = 0  # an upload's blobs fetched from peer agents
    peers_used: int = 0
    peer_failures: int = 0
    controller_bytes: int = 0  # pushed by the controller (PutBlob) for this mount
    store_bytes: int = 0  # fetched from the object store (FetchBlob) for this mount
    cached_bytes: int = 0  # already in the cache before the mount (a standing tree: its bytes)

    def transfer(self) -> DatasetTransfer:
        """The task's DatasetTransfer event: where the version's bytes came from."""
        return DatasetTransfer(
            bytes_from_peers=self.peer_bytes,
            bytes_from_controller=self.controller_bytes,
            bytes_from_store=self.store_bytes + self.fetched_bytes,
            cached_bytes=self.cached_bytes,
            seconds=self.seconds,
            peers_used=self.peers_used,
            peer_failures=self.peer_failures,
        )

    def summary(self, mount: DatasetMount) -> str:
        what = f"dataset {mount.name}:v{mount.version}: {self.files} file(s), {self.bytes / 2**20:.1f} MiB"
        if self.reused:
            return f"{what}, already on this agent ({self.path})"
        extra = f"; {self.assembled} chunked file(s) assembled" if self.assembled else ""
        if self.fetched_bytes:
            extra += f"; {self.fetched_bytes / 2**20:.1f} MiB fetched from the reference"
        if self.peer_bytes or self.peer_failures:
            extra += f"; {self.peer_bytes / 2**20:.1f} MiB from {self.peers_used} peer(s)"
            if self.peer_failures:
                extra += f" ({self.peer_failures} blob transfer(s) a peer failed, taken over by another)"
        return f"{what}, materialized read-only in {self.seconds:.2f} s{extra} ({self.path})"


@dataclasses.dataclass
class _Tree:
    blobs: frozenset[str]
    files: int
    bytes: int
    last_used: float
    name: str = ""  # the dataset's name and version (records before issue 20 phase B lack them)
    version: int = 0


@dataclasses.dataclass(frozen=True)
class TreeInfo:
    """A standing tree as `tensorfleet agents cache` shows it."""

    name: str
    version: int
    content_id: str
    bytes: int
    files: int
    last_used: float
    in_use: int


class DatasetCache:
    """The dataset trees of one agent; thread-safe (builds run in threads, eviction in any thread)."""

    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self.root = root
        self.blobs = blobs
        self._lock = threading.Lock()  # the indexes below; never held across disk work
        self._trees: dict[str, _Tree] = {}
        self._held: Counter[str] = Counter()  # blob -> standing trees that link it
        self._users: Counter[str] = Counter()  # key -> tasks using the tree (and builds under way)
        self._building: dict[str, threading.Lock] = {}  # key -> its build lock: one build per key at a time
        blobs.trees = self

    # ---- the Trees protocol (BlobStore.evict)

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def oldest_unused(self) -> tuple[float, str] | None:
        with self._lock:
            unused = [(t.last_used, key) for key, t in self._trees.items() if not self._users[key]]
        return min(unused) if unused else None

    def remove(self, key: str) -> None:
        with self._lock:
            if self._users[key]:
                return
            tree = self._trees.pop(key, None)
            if tree is not None:
                self._held.subtract(tree.blobs)
                self._held += Counter()
        self._delete(key)

    # ---- start

    def load(self) -> None:
        """Index the standing trees; remove what a crash left (builds, a tree without its record or the reverse)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.iterdir():
            name = path.name
            if name.startswith((".build-", ".trash-")):
                _remove_tree(path)
            elif name.endswith(".json") and SHA256_RE.match(name[:-5]):
                key = name[:-5]
                try:
                    record = json.loads(path.read_text())
                    tree = _Tree(
                        frozenset(record["blobs"]),
                        int(record["files"]),
                        int(record["bytes"]),
                        0.0,
                        str(record.get("name", "")),
                        int(record.get("version", 0)),
                    )
                    tree.last_used = path.stat().st_mtime
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning("dataset tree %s: unreadable record (%s); removing it", key[:12], exc)
                    self._delete(key)
                    continue
                if not (self.root / key).is_dir():
                    path.unlink(missing_ok=True)
                    continue
                with self._lock:
                    self._trees[key] = tree
                    self._held.update(tree.blobs)
        for path in self.root.iterdir():
            if SHA256_RE.match(path.name) and path.name not in self._trees:
                _remove_tree(path)  # renamed into place, but its record is gone: not ours to trust

    def trees(self) -> list[TreeInfo]:
        """The standing trees, most recently used first."""
        with self._lock:
            infos = [
                TreeInfo(t.name, t.version, key, t.bytes, t.files, t.last_used, self._users[key])
                for key, t in self._trees.items()
            ]
        return sorted(infos, key=lambda t: -t.last_used)

    # ---- use

    def acquire(self, mount: DatasetMount, stop: threading.Event | None = None) -> HeldDataset:
        """The mount's tree, built first unless it stands; held until `release(key)`. Blocking."""
        started = time.perf_counter()
        if mount.manifest_id:
            key, build = mount.manifest_id, self._upload_builder(mount)
        else:
            listing = self._read_listing(mount)
            key, build = listing.key, self._reference_builder(mount, listing)
        with self._lock:
            self._users[key] += 1  # from here the tree, once standing, is not evicted under us
            gate = self._building.setdefault(key, threading.Lock())
        try:
            with gate:
                tree = self._standing(key)
                if tree is not None:
                    return HeldDataset(
                        key,
                        self.root / key,
                        tree.files,
                        tree.bytes,
                        reused=True,
                        seconds=time.perf_counter() - started,
                        cached_bytes=tree.bytes,
                    )
                held = build(key, stop)
                return dataclasses.replace(held, seconds=time.perf_counter() - started)
        except BaseException:
            self.release(key)
            raise

    def release(self, key: str) -> None:
        """A task is done with the tree: it stays, evictable once no task uses it."""
        with self._lock:
            self._users[key] -= 1
            self._users += Counter()
            tree = self._trees.get(key)
            if tree is not None:
                tree.last_used = time.time()
        self.blobs.released()  # its blobs may go if it is no longer used
        with contextlib.suppress(OSError):
            os.utime(self.root / f"{key}.json")

    def _standing(self, key: str) -> _Tree | None:
        with self._lock:
            tree = self._trees.get(key)
            if tree is not None:
                tree.last_used = time.time()
        if tree is not None and not (self.root / key).is_dir():  # removed by hand: build it again
            self.remove(key)
            return None
        return tree

    # ---- uploads

    def _upload_builder(self, mount: DatasetMount) -> Callable[[str, threading.Event | None], HeldDataset]:
        def build(key: str, stop: threading.Event | None) -> HeldDataset:
            entries = self._read_manifest(mount)
            files = {e.sha256 for e in entries}
            chunks = {c for e in entries for c in e.chunks}
            pinned = sorted(files | chunks | {mount.manifest_id})
            self.blobs.pin(pinned)
            try:
                received = self.blobs.received(pinned)  # forgotten once the tree stands (a failure keeps them)
                chunked = [e for e in entries if e.chunks and not self.blobs.has(e.sha256)]
                sizes = _blob_sizes(entries, chunked)
                missing = sorted(sha for sha in sizes if not self.blobs.has(sha))
                cached = sum(size for sha, size in sizes.items() if sha not in missing and sha not in received)
                whole = {
                    e.sha256: e.size for e in entries if e.chunks and e not in chunked and e.sha256 not in received
                }
                cached += sum(whole.values())
                fetched = None
                seen: set[str] = set()
                if missing and mount.peers:
                    early = _EarlyAssembly(self.blobs, chunked, lambda e: self._assemble(mount, e), stop)
                    try:
                        fetched = self._with_peers(mount, entries, {sha: sizes[sha] for sha in missing}, stop)
                    finally:
                        seen = early.finish()
                    if early.error is not None:
                        raise early.error
                    missing = sorted(sha for sha in missing if not self.blobs.has(sha))
                    received = self.blobs.received(pinned)  # the controller's share came meanwhile
                if missing:
                    why = f"; {missing_message(fetched, mount.peers)}" if fetched is not None else ""
                    raise DatasetFailed(
                        ExitCause.SETUP,
                        f"dataset {mount.name}:v{mount.version}: {BlobsMissing(missing)} (the controller sends them "
                        f"before the task; worth a retry){why}",
                    )
                for entry in chunked:
                    if entry.sha256 not in seen:
                        _check_stop(stop)
                        self._assemble(mount, entry)
                        seen.add(entry.sha256)
                held = self._build(key, entries, stop, mount, also=(mount.manifest_id,))
            finally:
                self.blobs.unpin(pinned)
            # The chunks' content now lives in the whole files: drop them unless another holder pins one or it is
            # itself a file of the version (or of a standing tree).
            keep = files | self.held()
            for chunk in sorted({c for e in chunked for c in e.chunks} - keep):
                if not self.blobs.pinned(chunk):
                    self.blobs.path(chunk).unlink(missing_ok=True)
            self.blobs.received(received, forget=True)
            by_source = Counter[str]()
            for source, size in received.values():
                by_source[source] += size
            return dataclasses.replace(
                held,
                assembled=len(seen),
                cached_bytes=cached,
                controller_bytes=by_source["controller"],
                store_bytes=by_source["store"],
                peer_bytes=fetched.bytes_from_peers if fetched is not None else 0,
                peers_used=fetched.peers_used if fetched is not None else 0,
                peer_failures=fetched.peer_failures if fetched is not None else 0,
            )

        return build

    def _with_peers(
        self,
        mount: DatasetMount,
        entries: tuple[ManifestEntry, ...],
        missing: dict[str, int],
        stop: threading.Event | None,
    ) -> FetchResult:
        """Fetch `missing` (sha256 -> size) from the mount's peers. A peer holding a whole chunked file holds each
        of its chunks too (it serves them as byte ranges of the file). The blobs no peer is named for are this
        agent's share from the controller, which pushes them meanwhile (peers ask this agent for them: they wait
        while they are coming); they are awaited after the fetch while they keep arriving (SHARE_PATIENCE)."""
        chunk_of = {c: e.sha256 for e in entries for c in e.chunks}
        holds = [(p.node_id, frozenset(p.sha256)) for p in mount.peers]
        wants, coming = [], []
        order = exchange_order(entries)  # the order the holders are sent their shares in
        for sha, size in sorted(missing.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
            whole = chunk_of.get(sha, "")
            holders = tuple(node for node, held in holds if sha in held or whole in held)
            if holders:
                wants.append(Want(sha, size, holders))
            else:
                coming.append(sha)
        started = time.perf_counter()
        self.blobs.expect(coming)
        try:
            result = PeerFetch(self.blobs, wants, mount.peers, mount.ticket, mount.ticket_signature, stop).run()
            late = self.blobs.await_all(coming, SHARE_PATIENCE, stop)
        finally:
            self.blobs.unexpect(coming)
        if late:
            log.warning("%s:v%d: %d blob(s) from the controller did not come", mount.name, mount.version, len(late))
        log.info(
            "dataset %s:v%d: %d of %d blob(s), %.1f MiB from %d peer(s) in %.2fs (%d failed transfer(s))",
            mount.name,
            mount.version,
            len(result.fetched),
            len(missing),
            result.bytes_from_peers / 2**20,
            result.peers_used,
            time.perf_counter() - started,
            result.peer_failures,
        )
        _check_stop(stop)
        return result

    def _read_manifest(self, mount: DatasetMount) -> tuple[ManifestEntry, ...]:
        where = f"dataset {mount.name}:v{mount.version}"
        path = self.blobs.path(mount.manifest_id)
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise DatasetFailed(ExitCause.SETUP, f"{where}: its manifest is over {MAX_MANIFEST_BYTES >> 20} MiB")
            return manifest_from_bytes(path.read_bytes())
        except FileNotFoundError:
            raise DatasetFailed(
                ExitCause.SETUP, f"{where}: its manifest {mount.manifest_id[:12]} is not in this agent's blob cache"
            ) from None
        except ValidationError as exc:
            raise DatasetFailed(ExitCause.SETUP, f"{where}: its manifest is invalid: {exc}") from None

    def _assemble(self, mount: DatasetMount, entry: ManifestEntry) -> None:
        """The chunks of `entry`, each checked, written as the whole file into the cache and checked as a whole."""
        tmp = self.blobs.root / "incoming" / f"{uuid.uuid4().hex}.part"  # swept at start if we die mid-copy
        tmp.parent.mkdir(parents=True, exist_ok=True)
        whole, size = hashlib.sha256(), 0
        where = f"dataset {mount.name}:v{mount.version}: {entry.path!r}"
        try:
            with open(tmp, "wb") as out:
                for j, chunk in enumerate(entry.chunks):
                    piece, length = hashlib.sha256(), 0
                    with open(self.blobs.path(chunk), "rb") as src:
                        while data := src.read(_READ):
                            piece.update(data)
                            whole.update(data)
                            out.write(data)
                            length += len(data)
                    expected = min(CHUNK_BYTES, entry.size - j * CHUNK_BYTES)
                    if piece.hexdigest() != chunk or length != expected:
                        self.blobs.path(chunk).unlink(missing_ok=True)
                        raise DatasetFailed(
                            ExitCause.SETUP,
                            f"{where}: chunk {j + 1} of {len(entry.chunks)} ({chunk[:12]}) is damaged in this "
                            f"agent's cache ({length} bytes hashing to {piece.hexdigest()[:12]}); removed, the "
                            "next try fetches it again",
                        )
                    size += length
            if whole.hexdigest() != entry.sha256 or size != entry.size:
                raise DatasetFailed(
                    ExitCause.SETUP,
                    f"{where}: its {len(entry.chunks)} chunks make {size} bytes hashing to "
                    f"{whole.hexdigest()[:12]}, not the file's {entry.size} bytes {entry.sha256[:12]}",
                )
            self.blobs.adopt(tmp, entry.sha256)
        finally:
            tmp.unlink(missing_ok=True)

    # ---- references

    def _read_listing(self, mount: DatasetMount) -> _Listing:
        where = f"dataset {mount.name}:v{mount.version}"
        path = self.blobs.path(mount.listing_id)
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise DatasetFailed(ExitCause.SETUP, f"{where}: its listing is over {MAX_MANIFEST_BYTES >> 20} MiB")
            return parse_listing(json.loads(path.read_bytes().decode("utf-8")))
        except FileNotFoundError:
            raise DatasetFailed(
                ExitCause.SETUP, f"{where}: its listing {mount.listing_id[:12]} is not in this agent's blob cache"
            ) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise DatasetFailed(ExitCause.SETUP, f"{where}: its listing is not JSON: {exc}") from None
        except ValidationError as exc:
            raise DatasetFailed(ExitCause.SETUP, f"{where}: its listing is invalid: {exc}") from None

    def _reference_builder(
        self, mount: DatasetMount, listing: _Listing
    ) -> Callable[[str, threading.Event | None], HeldDataset]:
        def build(key: str, stop: threading.Event | None) -> HeldDataset:
            entries: list[ManifestEntry] = []
            changed: list[str] = []
            fetched = 0
            pinned: list[str] = []
            try:
                for obj in listing.objects:
                    _check_stop(stop)
                    try:
                        digest = self._fetch(obj)
                    except _Changed as exc:
                        changed.append(f"{obj.path} ({exc})")
                        continue
                    self.blobs.pin([digest])
                    pinned.append(digest)
                    fetched += obj.size
                    entries.append(ManifestEntry(obj.path, MODE_FILE, digest, obj.size))
                if changed:
                    raise DatasetFailed(
                        ExitCause.DATASET_CHANGED,
                        f"dataset {mount.name}:v{mount.version}: {len(changed)} file(s) of {listing.url} changed "
                        f"since the version was made: {'; '.join(changed[:10])}"
                        + (f" (and {len(changed) - 10} more)" if len(changed) > 10 else "")
                        + f"; run `tensorfleet datasets add {mount.name} {listing.url}` to snapshot a new version",
                    )
                held = self._build(key, entries, stop, mount)
            finally:
                self.blobs.unpin(pinned)
            return dataclasses.replace(held, fetched_bytes=fetched)

        return build

    def _fetch(self, obj: _Object) -> str:
        """One object into the cache, its size and etag checked against the snapshot; its sha256."""
        tmp = self.blobs.root / "incoming" / f"{uuid.uuid4().hex}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            if obj.get.startswith("/"):
                digest, size = _copy_file(obj, tmp)
            else:
                digest, size = _download(obj, tmp)
            if size != obj.size:
                raise _Changed(f"{size} bytes, the snapshot says {obj.size}")
            if not self.blobs.has(digest):
                self.blobs.adopt(tmp, digest)
            self.blobs.touch(digest)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    # ---- the tree

    def _build(
        self,
        key: str,
        entries: Iterable[ManifestEntry],
        stop: threading.Event | None,
        mount: DatasetMount,
        also: Iterable[str] = (),
    ) -> HeldDataset:
        """Hardlink `entries` read-only into a new tree, then rename it into place as `key`; the tree holds their
        blobs and those of `also` (an upload's manifest: the controller asks for it at each dispatch)."""
        plain = [dataclasses.replace(e, mode=MODE_FILE, chunks=()) for e in entries]  # all one read-only inode
        build = self.root / f".build-{uuid.uuid4().hex}"
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            try:
                result = materialize(self.blobs, plain, build, link="hardlink")
            except BlobsMissing as exc:
                raise DatasetFailed(ExitCause.SETUP, f"{exc} (evicted meanwhile; worth a retry)") from None
            except (ValidationError, OSError) as exc:
                raise DatasetFailed(ExitCause.SETUP, f"could not lay out the dataset: {exc}") from None
            _check_stop(stop)
            _seal(build)
            blobs = frozenset(e.sha256 for e in plain) | frozenset(also)
            record = {
                "blobs": sorted(blobs),
                "files": result.files,
                "bytes": result.bytes,
                "name": mount.name,
                "version": mount.version,
            }
            note = self.root / f".build-{key}.json.tmp"
            note.write_text(json.dumps(record))
            os.replace(note, self.root / f"{key}.json")
            os.rename(build, self.root / key)  # the tree appears whole, or not at all
        except BaseException:
            _remove_tree(build)
            raise
        with self._lock:
            self._trees[key] = _Tree(blobs, result.files, result.bytes, time.time(), mount.name, mount.version)
            self._held.update(blobs)
        self.blobs.evict_if_due()  # trees no task uses may go if space is short
        return HeldDataset(key, self.root / key, result.files, result.bytes, reused=False)

    def _delete(self, key: str) -> None:
        (self.root / f"{key}.json").unlink(missing_ok=True)
        tree = self.root / key
        if tree.exists():
            trash = self.root / f".trash-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(tree, trash)
                _remove_tree(trash)


# ---- reference listings


@dataclasses.dataclass(frozen=True)
class _Object:
    path: str
    size: int
    etag: str
    get: str


@dataclasses.dataclass(frozen=True)
class _Listing:
    url: str
    objects: tuple[_Object, ...]
    key: str  # sha256 of the snapshot: url and (path, size, etag) rows, without the "get" of this dispatch


class _Changed(Exception):
    """An object is not what the snapshot says."""


class _EarlyAssembly:
    """Assembles each chunked file in a thread of its own as soon as all its chunks are here, while the rest of the
    version is still being fetched from peers: run after the last chunk, the assembly (every file read, hashed and
    written again) was the tail of a shared version's download (8 agents, 1 GiB: 37 s after the fetch). `finish`
    stops it (a file being assembled is finished) and gives the files it assembled; the rest are assembled after,
    as before. What it failed with (a damaged chunk: DatasetFailed) is in `error`, for the mount to raise."""

    POLL = 0.25  # seconds between looks at which chunks arrived

    def __init__(
        self,
        blobs: BlobStore,
        entries: list[ManifestEntry],
        assemble: Callable[[ManifestEntry], None],
        stop: threading.Event | None,
    ) -> None:
        self.blobs = blobs
        self.pending = {e.sha256: e for e in entries}  # (a file twice in a version is assembled once)
        self.assemble = assemble
        self.stop = stop
        self.done: set[str] = set()
        self.error: BaseException | None = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataset-assemble", daemon=True)
        if self.pending:
            self._thread.start()

    def _run(self) -> None:
        lacking = {sha: set(e.chunks) for sha, e in self.pending.items()}
        try:
            while lacking and not self._finished.is_set() and not (self.stop is not None and self.stop.is_set()):
                ready = []
                for sha, chunks in lacking.items():
                    chunks.difference_update([c for c in chunks if self.blobs.has(c)])
                    if not chunks:
                        ready.append(sha)
                for sha in ready:
                    del lacking[sha]
                    if self._finished.is_set() or (self.stop is not None and self.stop.is_set()):
                        return
                    self.assemble(self.pending[sha])
                    self.done.add(sha)
                if not ready:
                    self._finished.wait(self.POLL)
        except BaseException as exc:  # a damaged chunk (DatasetFailed), a full disk: the mount fails with it
            self.error = exc

    def finish(self) -> set[str]:
        self._finished.set()
        if self.pending:
            self._thread.join()
        return set(self.done)


def parse_listing(body: Any) -> _Listing:
    """A reference listing blob's JSON, checked: paths as a manifest's, sizes, etags, and each "get" an http(s) URL
    or an absolute path. A ValidationError names the first bad field."""
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not isinstance(body.get("objects"), list):
        raise ValidationError("listing", 'must be an object {"url": str, "objects": [...]}')
    objects = []
    for i, item in enumerate(body["objects"]):
        field = f"listing.objects[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(field, "must be an object {path, size, etag, get}")
        path, size, etag, get = item.get("path"), item.get("size"), item.get("etag", ""), item.get("get")
        if type(size) is not int or size < 0:
            raise ValidationError(f"{field}.size", f"is {size!r}; a whole number of bytes, at least 0")
        if not isinstance(etag, str) or not isinstance(get, str) or not isinstance(path, str):
            raise ValidationError(field, "path, etag and get must be strings")
        if not (get.startswith("/") or get.startswith(("http://", "https://"))):
            raise ValidationError(f"{field}.get", f"must be an http(s) URL or an absolute path, got {get[:60]!r}")
        objects.append(_Object(path, size, etag, get))
    # the paths as a manifest's: relative, no '..', no duplicate, no file that is also a folder
    validate_manifest(ManifestEntry(o.path, MODE_FILE, _NO_HASH, o.size) for o in objects)
    rows = sorted([o.path, o.size, o.etag] for o in objects)
    snapshot = json.dumps({"url": body["url"], "objects": rows}, separators=(",", ":"), ensure_ascii=False)
    return _Listing(body["url"], tuple(objects), hashlib.sha256(snapshot.encode()).hexdigest())


def _file_etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}:{st.st_size}"


def _copy_file(obj: _Object, tmp: Path) -> tuple[str, int]:
    """A file reference's object copied and hashed; _Changed when its mtime/size is not the snapshot's (before or
    after the copy: a file written meanwhile is refused too)."""
    try:
        fd = os.open(obj.get, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Changed("no longer there") from None
    except OSError as exc:
        raise _Changed(f"unreadable: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as src:
        before = os.fstat(src.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise _Changed("not a regular file")
        if obj.etag and _file_etag(before) != obj.etag:
            raise _Changed(f"modified: {_file_etag(before)}, the snapshot says {obj.etag}")
        digest, size = _stream(src.read, tmp)
        after = os.fstat(src.fileno())
    if _file_etag(after) != _file_etag(before):
        raise _Changed("modified while it was read")
    return digest, size


def _download(obj: _Object, tmp: Path) -> tuple[str, int]:
    """An object-store object read through its presigned URL; _Changed when its ETag is not the snapshot's."""
    try:
        with urllib.request.urlopen(obj.get, timeout=_TIMEOUT) as response:
            etag = str(response.headers.get("ETag") or "").strip().removeprefix("W/").strip('"')
            if obj.etag and etag and etag != obj.etag.strip('"'):
                raise _Changed(f"ETag {etag}, the snapshot says {obj.etag.strip(chr(34))}")
            return _stream(response.read, tmp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise _Changed("no longer in the bucket") from None
        raise DatasetFailed(ExitCause.SETUP, f"{obj.path}: the object store answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetFailed(ExitCause.SETUP, f"{obj.path}: cannot reach the object store: {exc}") from None


def _stream(read: Callable[[int], bytes], tmp: Path) -> tuple[str, int]:
    hasher, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        while data := read(_READ):
            hasher.update(data)
            out.write(data)
            size += len(data)
    return hasher.hexdigest(), size


# ---- helpers


def _blob_sizes(entries: Iterable[ManifestEntry], chunked: Iterable[ManifestEntry]) -> dict[str, int]:
    """The blobs a version needs in the cache (sha256 -> size): each unchunked file, and the chunks of each chunked
    file not already whole here."""
    sizes = {e.sha256: e.size for e in entries if not e.chunks}
    for entry in chunked:
        for j, chunk in enumerate(entry.chunks):
            sizes[chunk] = min(CHUNK_BYTES, entry.size - j * CHUNK_BYTES)
    return sizes


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped("the task was cancelled while its dataset was being made ready")


def _seal(root: Path) -> None:
    """Files 0444 (a copied one too), directories 0555, deepest first so the walk can still enter them."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if stat.S_IMODE(os.lstat(path).st_mode) != FILE_MODE:
                os.chmod(path, FILE_MODE, follow_symlinks=False)
        os.chmod(dirpath, DIR_MODE)


def _remove_tree(path: Path) -> None:
    """rmtree of a sealed tree: its 0555 directories are opened up first (the files' inodes stay the blobs')."""
    if not path.exists():
        return
    if path.is_dir():
        for dirpath, _dirnames, _filenames in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(dirpath, 0o755)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
