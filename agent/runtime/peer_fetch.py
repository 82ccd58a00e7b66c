"""The blobs a dataset version lacks here, fetched from peer agents that hold them (issue 20). Blocking (a thread).

    result = PeerFetch(store, wants, mount.peers, mount.ticket, mount.ticket_signature, stop).run()
    result.missing   # blobs no peer could serve: the task fails SETUP naming them (the controller pushes them)

A few streams per peer (STREAMS_PER_PEER, over one channel each), so the blobs spread over every peer that holds
them; each blob goes to a `.part` file under the cache's incoming/ and is adopted only once its size and sha256 are
the manifest's. A stream that breaks keeps what arrived: the blob goes back to the queue with its offset, and the
next holder continues from there (GetPeerBlobRequest.offset) rather than from 0. A peer that cannot be reached,
refuses the ticket or breaks a stream before sending anything is dropped for the rest of the download; one whose
connection broke mid-blob (after bytes came) or that lacks a blob or sent bytes that do not hash to it is dropped for
that blob only (a wrong hash restarts the blob from 0). A blob every live holder lacked (or broke) is asked again
after RETRY_AFTER while the download makes progress (PATIENCE): the controller names holders it is still sending to.
Channels are made by rpc/client.py (peer_channel: TLS pinned to the fingerprint the controller gave).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tensorfleet_agent.core.types import PeerSource
from tensorfleet_agent.rpc.client import PeerBlobCall, peer_channel
from tensorfleet_agent.runtime.blobs import BlobStore

log = logging.getLogger(__name__)

STREAMS_PER_PEER = 3
MAX_STREAMS = 16
MIN_RATE = 256 * 1024  # bytes/s: a blob slower than this from one peer (plus BASE_DEADLINE) is given to another
BASE_DEADLINE = 30.0
_STOP_CHECK = 0.5  # seconds between checks of the task's stop flag while streams run
RETRY_AFTER = 1.0  # seconds before a blob that every holder lacked (or had not yet: it is on its way) is asked again
PATIENCE = 60.0  # ... as long as some blob of this download arrived within this many seconds
# A peer that answers these lacks (or mangled) this one blob; anything else drops the peer for the whole download.
_BLOB_ONLY = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED)
_LATER = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED)  # of those, the ones asked again later

Connect = Callable[[str, str], grpc.Channel]


@dataclass(frozen=True)
class Want:
    """A blob to fetch: its manifest size, and the peers that hold it (node ids, the controller's order)."""

    sha256: str
    size: int
    holders: tuple[str, ...]


@dataclass
class FetchResult:
    bytes_from_peers: int = 0  # bytes received and kept (a broken stream's bytes count when the next one resumes)
    peers_used: int = 0  # peers that sent bytes (a peer that died mid-blob counts: its bytes were kept)
    peer_failures: int = 0  # blob transfers a peer failed (another holder took over, or none was left)
    fetched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # no holder could serve these
    reasons: dict[str, str] = field(default_factory=dict)  # node id -> why it was dropped


@dataclass
class _Part:
    path: Path
    hasher: Any = field(default_factory=hashlib.sha256)
    written: int = 0
    tried: set[str] = field(default_factory=set)  # peers that failed this blob


class _PeerGone(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BlobFailed(Exception):
    def __init__(self, reason: str, later: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.later = later  # the peer lacked it (or took too long): it may still come to the peer


class PeerFetch:
    """One download of a version's missing blobs from its peers; `run` once."""

    def __init__(
        self,
        store: BlobStore,
        wants: Sequence[Want],
        peers: Sequence[PeerSource],
        ticket: bytes,
        ticket_signature: bytes,
        stop: threading.Event | None = None,
        connect: Connect = peer_channel,
        streams_per_peer: int = STREAMS_PER_PEER,
    ) -> None:
        self.store = store
        self.wants = {w.sha256: w for w in wants}
        self.peers = {p.node_id: p for p in peers}
        self.ticket = ticket
        self.signature = ticket_signature
        self.stop = stop or threading.Event()
        self.connect = connect
        self.streams_per_peer = streams_per_peer
        self._cond = threading.Condition()
        self._pending = set(self.wants)  # not taken by a stream (or given back by one that failed)
        # Each peer's blobs in the order of `wants` (core.manifest.exchange_order: the order the controller sends
        # the holders their shares in): a stream of a peer takes the next one still pending; a blob given back goes
        # to the front of the queues of its other live holders. Linear in blobs x holders, however many files.
        self._queues: dict[str, collections.deque[str]] = {p: collections.deque() for p in self.peers}
        for sha in self.wants:
            for holder in self.wants[sha].holders:
                if holder in self._queues:
                    self._queues[holder].append(sha)
        self._inflight: dict[str, str] = {}
        self._parts: dict[str, _Part] = {}
        self._dead: dict[str, str] = {}
        self._channels: dict[str, grpc.Channel] = {}
        self._calls: set[PeerBlobCall] = set()
        self._served: set[str] = set()
        # A holder the controller named may still be receiving the blob (its share from the controller, or its own
        # fetch): once every live holder lacked it, it is asked again after RETRY_AFTER while the download goes on.
        self._later: dict[str, float] = {}  # sha256 -> when to ask its holders again
        self._progress = time.monotonic()  # the last blob adopted (or the start)
        self.result = FetchResult()

    # ---- the run

    def run(self) -> FetchResult:
        incoming = self.store.root / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        self.store.expect(list(self.wants))  # a peer of ours asking for one of these meanwhile waits for it
        try:
            return self._run()
        finally:
            self.store.unexpect(list(self.wants))

    def _run(self) -> FetchResult:
        used = [p for p in self.peers if any(p in w.holders for w in self.wants.values())]
        slots = [(peer, i) for i in range(self.streams_per_peer) for peer in used][:MAX_STREAMS]
        done = threading.Event()
        running = [len(slots)]

        def worker(peer: str) -> None:
            try:
                self._worker(peer)
            finally:
                with self._cond:
                    running[0] -= 1
                    if running[0] <= 0:
                        done.set()

        threads = [
            threading.Thread(target=worker, args=(peer,), name=f"peer-fetch-{peer[:8]}-{i}", daemon=True)
            for peer, i in slots
        ]
        for thread in threads:
            thread.start()
        if not threads:
            done.set()
        try:
            while not done.wait(_STOP_CHECK):
                if self.stop.is_set():
                    self._cancel_calls()
            for thread in threads:
                thread.join()
        finally:
            for part in self._parts.values():
                part.path.unlink(missing_ok=True)
            for channel in self._channels.values():
                channel.close()
        with self._cond:
            self.result.missing = sorted(set(self.wants) - set(self.result.fetched))
            self.result.peers_used = len(self._served)
            self.result.reasons = dict(self._dead)
        return self.result

    def _cancel_calls(self) -> None:
        with self._cond:
            calls = list(self._calls)
            self._cond.notify_all()
        for call in calls:
            call.cancel()

    # ---- one stream slot of one peer

    def _worker(self, peer: str) -> None:
        while True:
            sha = self._take(peer)
            if sha is None:
                return
            try:
                self._fetch(peer, sha)
            except _PeerGone as exc:
                self._failed(peer, sha, exc.reason, peer_gone=True)
                return
            except _BlobFailed as exc:
                self._failed(peer, sha, exc.reason, peer_gone=False, later=exc.later)
            except Exception as exc:  # a full disk, a bug: this blob from this peer failed; others go on
                log.warning("peer fetch of %s from %s failed: %s", sha[:12], peer[:12], exc)
                self._failed(peer, sha, f"{type(exc).__name__}: {exc}", peer_gone=False)
            else:
                with self._cond:
                    self._inflight.pop(sha, None)
                    self.result.fetched.append(sha)
                    self._cond.notify_all()

    def _take(self, peer: str) -> str | None:
        """The next blob for `peer`, waiting while a blob in flight elsewhere may still come back to it."""
        with self._cond:
            while True:
                if self.stop.is_set() or peer in self._dead:
                    return None
                now = time.monotonic()
                for sha in [s for s, due in self._later.items() if due <= now]:
                    del self._later[sha]
                    self._pending.add(sha)
                    for holder in self.wants[sha].holders:
                        if holder in self._queues and holder not in self._dead:
                            self._queues[holder].appendleft(sha)
                queue = self._queues[peer]
                while queue:
                    sha = queue.popleft()
                    if sha in self._pending and self._eligible(peer, sha):
                        self._pending.discard(sha)
                        self._inflight[sha] = peer
                        return sha
                if not any(self._eligible(peer, sha) for sha in (*self._inflight, *self._later)):
                    return None
                self._cond.wait(_STOP_CHECK)

    def _eligible(self, peer: str, sha: str) -> bool:
        part = self._parts.get(sha)
        return peer in self.wants[sha].holders and (part is None or peer not in part.tried)

    def _failed(self, peer: str, sha: str, reason: str, peer_gone: bool, later: bool = False) -> None:
        with self._cond:
            self._inflight.pop(sha, None)
            self.result.peer_failures += 1
            part = self._parts.get(sha)
            if part is not None:
                part.tried.add(peer)
            if peer_gone:
                self._drop(peer, reason)  # (the condition's lock is reentrant)
            else:
                log.info("dataset peer %s could not serve %s: %s", peer[:12], sha[:12], reason)
            if not self.stop.is_set():
                live = [h for h in self.wants[sha].holders if h in self._queues and h not in self._dead]
                waiting = bool(live) and time.monotonic() - self._progress < PATIENCE  # it may be on its way to them
                if part is not None and later and waiting and not any(self._eligible(h, sha) for h in live):
                    part.tried.clear()
                    self._later[sha] = time.monotonic() + RETRY_AFTER
                    self._cond.notify_all()
                    return
                self._pending.add(sha)
                for holder in live:  # resumed first: its bytes so far are not wasted
                    if self._eligible(holder, sha):
                        self._queues[holder].appendleft(sha)
            self._cond.notify_all()

    def _drop(self, peer: str, reason: str) -> None:
        with self._cond:
            if peer not in self._dead:
                self._dead[peer] = reason
                log.warning("dataset peer %s dropped: %s", peer[:12], reason)
            self._cond.notify_all()

    # ---- one blob from one peer

    def _channel(self, peer: str) -> grpc.Channel:
        with self._cond:
            channel = self._channels.get(peer)
        if channel is not None:
            return channel
        source = self.peers[peer]
        try:
            channel = self.connect(source.address, source.cert_fingerprint)
        except Exception as exc:
            raise _PeerGone(f"cannot connect to {source.address}: {exc}") from None
        with self._cond:
            if peer in self._channels:  # another slot of this peer was quicker
                extra, channel = channel, self._channels[peer]
                extra.close()
            else:
                self._channels[peer] = channel
        return channel

    def _forget_channel(self, peer: str, channel: grpc.Channel) -> None:
        with self._cond:
            if self._channels.get(peer) is channel:
                del self._channels[peer]
        channel.close()

    def _fetch(self, peer: str, sha: str) -> None:
        want = self.wants[sha]
        with self._cond:
            part = self._parts.get(sha)
            if part is None:
                part = self._parts[sha] = _Part(self.store.root / "incoming" / f"{uuid.uuid4().hex}.part")
        deadline = BASE_DEADLINE + (want.size - part.written) / MIN_RATE
        channel = self._channel(peer)
        call = PeerBlobCall(channel, self.ticket, self.signature, sha, part.written, deadline)
        with self._cond:
            self._calls.add(call)
        started = time.monotonic()
        resumed_at = part.written
        try:
            with open(part.path, "ab") as out:
                for item in call:
                    if self.stop.is_set():
                        raise _BlobFailed("the task was cancelled")
                    if isinstance(item, int):
                        if item != want.size:
                            raise _BlobFailed(f"the peer has {item} bytes, the manifest says {want.size}")
                        continue
                    if part.written + len(item) > want.size:
                        raise _BlobFailed(f"the peer sent more than the manifest's {want.size} bytes")
                    out.write(item)
                    part.hasher.update(item)
                    part.written += len(item)
                    with self._cond:
                        self.result.bytes_from_peers += len(item)
                        self._served.add(peer)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if self.stop.is_set():
                raise _BlobFailed("the task was cancelled") from None
            reason = f"{code.name if code else 'UNKNOWN'}: {details} (after {part.written} of {want.size} bytes)"
            if code in _BLOB_ONLY:
                raise _BlobFailed(reason, later=code in _LATER) from None
            with self._cond:
                replaced = self._channels.get(peer) is not channel  # another stream of ours closed it (below)
            broke = code == grpc.StatusCode.UNAVAILABLE or (code == grpc.StatusCode.CANCELLED and replaced)
            if broke and (replaced or resumed_at < part.written < want.size) and part.written < want.size:
                # The connection broke mid-stream (a reset, a keepalive ping lost on a saturated link), or another
                # stream on it did and closed it: the peer was serving a moment ago. Its next call reconnects; if it
                # is gone, that fails before any byte.
                self._forget_channel(peer, channel)
                raise _BlobFailed(reason, later=True) from None
            if part.written != want.size:
                raise _PeerGone(reason) from None
            if not broke:  # every byte came before the peer ended the stream badly: the blob is checked and kept
                self._drop(peer, reason)
        finally:
            call.cancel()  # a stream left early stops the peer's sending
            with self._cond:
                self._calls.discard(call)
        if part.written != want.size:
            raise _BlobFailed(f"the stream ended after {part.written} of {want.size} bytes")
        if part.hasher.hexdigest() != sha:
            with self._cond:
                self.result.bytes_from_peers -= part.written
                self._parts[sha] = _Part(part.path, tried=part.tried)
            part.path.unlink(missing_ok=True)
            raise _BlobFailed(f"{want.size} bytes hashing to {part.hasher.hexdigest()[:12]}: thrown away")
        self.store.adopt(part.path, sha)  # evicted by the store's throttle (the blobs wanted are pinned by the mount)
        with self._cond:
            self._parts.pop(sha, None)
            self._progress = time.monotonic()
        log.debug(
            "blob %s (%d bytes) from peer %s in %.2fs", sha[:12], want.size, peer[:12], time.monotonic() - started
        )


def missing_message(result: FetchResult, peers: Sequence[PeerSource]) -> str:
    """Why the peers could not give every blob: the blobs, and what each dropped peer said."""
    names = {p.node_id: p.address for p in peers}
    head = ", ".join(s[:12] for s in result.missing[:10]) + (
        f" (and {len(result.missing) - 10} more)" if len(result.missing) > 10 else ""
    )
    why = "; ".join(f"{names.get(n, n)}: {r}" for n, r in sorted(result.reasons.items()))
    return f"{len(result.missing)} blob(s) no peer could serve: {head}" + (f" [{why}]" if why else "")
