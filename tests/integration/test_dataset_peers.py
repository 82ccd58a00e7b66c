"""Peer-to-peer dataset blobs between real AgentService servers over pinned TLS (issue 20): a reader agent builds a
version's tree from two peers; the first peer dies mid-transfer and the second resumes its blobs at their offsets
(nothing fetched twice); GetPeerBlob refuses a ticket for another version, an expired, unsigned or unknown
controller's ticket (PERMISSION_DENIED) and answers NOT_FOUND for a version it lacks; a wrong pinned fingerprint is
refused before any byte; a blob the peer is being sent is waited for, one it lacks is asked again (the controller
may still be sending it there) while the reader's own share from the controller is awaited; with every peer gone
the task fails SETUP naming the blobs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes
from tensorfleet_agent.core.types import DatasetMount, ExitCause, PeerSource
from tensorfleet_agent.identity import Identity, load_or_create_identity
from tensorfleet_agent.rpc import service
from tensorfleet_agent.rpc.client import AgentClient, AgentTrust, PeerBlobCall, PeerIdentityError, peer_channel
from tensorfleet_agent.rpc.server import create_server, tls_server_credentials
from tensorfleet_agent.rpc.service import AgentServicer
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.datasets import DatasetCache, DatasetFailed
from tensorfleet_agent.security.authority import AUTHORIZED_FILE, Authority, _write_json
from tensorfleet_agent.security.interceptor import AuthInterceptor
from tensorfleet_agent.security.tickets import make_ticket

pytestmark = pytest.mark.slow

DIE_AFTER = 3 * (1 << 20)  # bytes the dying peer sends before its server stops


def _put(store: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    if not store.has(sha):
        writer = store.writer(sha, len(data))
        writer.write(data)
        writer.commit()
    return sha


@dataclass
class Version:
    files: dict[str, bytes]
    entries: list[ManifestEntry]
    manifest: bytes
    content_id: str


def _version(files: dict[str, bytes]) -> Version:
    entries = []
    for path, data in sorted(files.items()):
        chunks: tuple[str, ...] = ()
        if len(data) > CHUNK_BYTES:
            chunks = tuple(
                hashlib.sha256(data[i : i + CHUNK_BYTES]).hexdigest() for i in range(0, len(data), CHUNK_BYTES)
            )
        entries.append(ManifestEntry(path, 0o644, hashlib.sha256(data).hexdigest(), len(data), chunks))
    manifest = manifest_bytes(entries)
    return Version(files, entries, manifest, hashlib.sha256(manifest).hexdigest())


class _Loop:
    """An event loop in a thread for the peers' grpc.aio servers (the reader's fetch blocks the test's thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _Peer:
    """An agent's AgentService with its blob cache holding `version` as an agent keeps it (a chunked file whole,
    its chunk blobs dropped), paired with `controller`."""

    def __init__(
        self, loop: _Loop, root: Path, controller: Identity, version: Version, die_after: int = 0, break_after: int = 0
    ) -> None:
        self.loop = loop
        self.identity = load_or_create_identity(root / "identity", "agent")
        _write_json(
            root / "identity" / AUTHORIZED_FILE,
            {controller.fingerprint: {"cert_pem": controller.cert_pem.decode(), "paired_at": 0}},
        )
        authority = Authority(root / "identity", self.identity)
        self.blobs = BlobStore(root / "blobs", 1 << 30)
        for data in version.files.values():
            _put(self.blobs, data)
        _put(self.blobs, version.manifest)
        executor: Any = SimpleNamespace(datasets=DatasetCache(root / "datasets", self.blobs))
        self.offsets: list[tuple[str, int]] = []  # (sha256, offset) of each GetPeerBlob it was asked
        self.sent = 0
        self.broke = False
        self.dying: asyncio.Task[None] | None = None
        peer = self

        class Servicer(AgentServicer):
            async def GetPeerBlob(self, request: Any, context: Any) -> AsyncIterator[pb.BlobChunk]:
                peer.offsets.append((request.sha256, request.offset))
                async for item in super().GetPeerBlob(request, context):
                    yield item
                    peer.sent += len(item.data)
                    if break_after and peer.sent >= break_after and not peer.broke:  # once: the peer lives on
                        peer.broke = True
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "Stream removed (connection reset)")
                    if die_after and peer.sent >= die_after and peer.dying is None:
                        # killed mid-transfer: every stream breaks (stopped from a task of its own, not this call's)
                        peer.dying = asyncio.get_running_loop().create_task(peer.server.stop(None))

        self.servicer = Servicer(executor, self.blobs, None, None, authority)  # type: ignore[arg-type]

        async def start() -> tuple[grpc.aio.Server, int]:
            credentials = tls_server_credentials(self.identity.key_pem, self.identity.cert_pem)
            server, port = create_server(
                [self.servicer.register], "127.0.0.1", 0, credentials, [AuthInterceptor(authority)]
            )
            await server.start()
            return server, port

        self.server, self.port = loop.run(start())

    def source(self, sha256: list[str]) -> PeerSource:
        return PeerSource(self.identity.node_id, f"127.0.0.1:{self.port}", self.identity.fingerprint, tuple(sha256))

    def stop(self) -> None:
        async def stop() -> None:
            if self.dying is not None:
                await self.dying
            await self.server.stop(None)

        self.loop.run(stop())


@pytest.fixture
def loop() -> Iterator[_Loop]:
    running = _Loop()
    yield running
    running.close()


def _reader(root: Path, version: Version) -> DatasetCache:
    """An agent the controller sent only the manifest (the peers hold everything else)."""
    blobs = BlobStore(root / "blobs", 1 << 30)
    _put(blobs, version.manifest)
    cache = DatasetCache(root / "datasets", blobs)
    cache.load()
    return cache


def test_a_peer_killed_mid_transfer_is_replaced_and_its_blobs_resumed(tmp_path: Path, loop: _Loop) -> None:
    controller = load_or_create_identity(tmp_path / "controller", "controller")
    files = {"big.bin": os.urandom(2 * CHUNK_BYTES + 12345), "cats/1.txt": b"one", "dogs/2.txt": os.urandom(70_000)}
    version = _version(files)
    dying = _Peer(loop, tmp_path / "a", controller, version, die_after=DIE_AFTER)
    healthy = _Peer(loop, tmp_path / "b", controller, version)
    holds = sorted(e.sha256 for e in version.entries)  # HasBlobs' view: the big file whole, not its chunks
    reader = _reader(tmp_path / "reader", version)
    ticket, signature = make_ticket(controller, "reader", [version.content_id], ttl=60, job_id="job-1")
    mount = DatasetMount(
        "pets", 1, version.content_id, "", (dying.source(holds), healthy.source(holds)), ticket, signature
    )
    try:
        held = reader.acquire(mount)
        for path, data in files.items():
            assert (held.path / path).read_bytes() == data
        transfer = held.transfer()
        wanted = sum(len(d) for d in files.values())  # the big file's three chunks and the two small files
        assert transfer.bytes_from_peers == wanted, transfer  # resumed: no byte fetched twice
        assert transfer.peer_failures >= 1 and transfer.peers_used == 2, transfer
        assert transfer.cached_bytes == 0 and transfer.bytes_from_controller == 0
        assert dying.sent >= DIE_AFTER
        resumed = [(sha, off) for sha, off in healthy.offsets if off > 0]
        assert resumed, f"no blob was resumed at an offset: {healthy.offsets}"
        assert all(0 < off < CHUNK_BYTES for _sha, off in resumed)
        # The chunk blobs were assembled into the file and dropped; the healthy peer served chunks as ranges.
        big = next(e for e in version.entries if e.chunks)
        assert not any(reader.blobs.has(c) for c in big.chunks) and reader.blobs.has(big.sha256)

        # With its only peer gone, a second reader fails SETUP naming what it could not get.
        lonely = _reader(tmp_path / "reader2", version)
        gone = DatasetMount("pets", 1, version.content_id, "", (dying.source(holds),), ticket, signature)
        with pytest.raises(DatasetFailed) as failed:
            lonely.acquire(gone)
        assert failed.value.cause == ExitCause.SETUP
        assert "no peer could serve" in failed.value.message and big.chunks[0][:12] in failed.value.message
    finally:
        healthy.stop()
        dying.stop()


def test_a_peer_named_before_it_has_a_blob_is_asked_again_and_the_controllers_share_is_awaited(
    tmp_path: Path, loop: _Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller names as holder a reader it is still sending the blob to, and starts the task before its
    own share is in: the peer is asked again until the blob is there, and the share is waited for. (The peer's
    own wait for a blob not yet on its way is cut short here, so that it refuses and is asked again.)"""
    monkeypatch.setattr(service, "MOUNT_GRACE", 0.2)
    controller = load_or_create_identity(tmp_path / "controller", "controller")
    files = {"early.txt": b"at the peer already", "late.bin": os.urandom(300_000), "mine.bin": os.urandom(200_000)}
    version = _version(files)
    sha = {e.path: e.sha256 for e in version.entries}
    peer = _Peer(loop, tmp_path / "peer", controller, version)
    for path in ("late.bin", "mine.bin"):
        peer.blobs.path(sha[path]).unlink()
    reader = _reader(tmp_path / "reader", version)
    ticket, signature = make_ticket(controller, "reader", [version.content_id], ttl=60, job_id="job-1")
    named = [sha["early.txt"], sha["late.bin"]]  # mine.bin: the reader's share, from the controller
    mount = DatasetMount("pets", 1, version.content_id, "", (peer.source(named),), ticket, signature)

    def controller_pushes() -> None:
        _put(reader.blobs, files["mine.bin"])
        reader.blobs.note_received(sha["mine.bin"], len(files["mine.bin"]), "controller")

    share = threading.Timer(1.0, controller_pushes)
    to_peer = threading.Timer(2.0, lambda: _put(peer.blobs, files["late.bin"]))
    share.start()
    to_peer.start()
    started = time.monotonic()
    try:
        held = reader.acquire(mount)
        assert time.monotonic() - started >= 1.9
        for path, data in files.items():
            assert (held.path / path).read_bytes() == data
        transfer = held.transfer()
        assert transfer.bytes_from_peers == len(files["early.txt"]) + len(files["late.bin"]), transfer
        assert transfer.bytes_from_controller == len(files["mine.bin"]) and transfer.peer_failures >= 1, transfer
        assert [s for s, _ in peer.offsets].count(sha["late.bin"]) >= 2  # asked again once it had it
    finally:
        share.cancel()
        to_peer.cancel()
        peer.stop()


def test_a_holder_asked_just_before_its_mount_announces_the_blob_waits_for_it(
    tmp_path: Path, loop: _Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader named the holder of its share may be asked before its own mount has marked that share incoming:
    holding the version's manifest, it waits (MOUNT_GRACE) for the blob to be on its way, then for it to land,
    and serves it on the first ask. A blob that never comes is refused once the grace is over."""
    monkeypatch.setattr(service, "MOUNT_GRACE", 1.0)
    controller = load_or_create_identity(tmp_path / "controller", "controller")
    files = {"share.bin": os.urandom(100_000), "never.bin": os.urandom(1000)}
    version = _version(files)
    sha = {e.path: e.sha256 for e in version.entries}
    peer = _Peer(loop, tmp_path / "peer", controller, version)
    for path in files:
        peer.blobs.path(sha[path]).unlink()
    channel = peer_channel(f"127.0.0.1:{peer.port}", peer.identity.fingerprint)
    ticket = make_ticket(controller, "r", [version.content_id], 60)

    def get(blob: str) -> bytes:
        return b"".join(x for x in PeerBlobCall(channel, *ticket, blob, 0, 20) if isinstance(x, bytes))

    mount_starts = threading.Timer(0.4, lambda: peer.blobs.expect([sha["share.bin"]]))
    lands = threading.Timer(0.8, lambda: _put(peer.blobs, files["share.bin"]))
    mount_starts.start()
    lands.start()
    try:
        started = time.monotonic()
        assert get(sha["share.bin"]) == files["share.bin"]
        assert time.monotonic() - started >= 0.7
        assert [s for s, _ in peer.offsets].count(sha["share.bin"]) == 1  # served on the first ask
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            get(sha["never.bin"])
        error: Any = caught.value
        assert error.code() == grpc.StatusCode.NOT_FOUND and 0.9 <= time.monotonic() - started < 5
    finally:
        mount_starts.cancel()
        lands.cancel()
        peer.blobs.unexpect([sha["share.bin"]])
        channel.close()
        peer.stop()


def test_a_file_whose_chunks_are_all_in_is_assembled_while_the_rest_is_still_fetched(
    tmp_path: Path, loop: _Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Assembly overlaps the fetch: a chunked file is assembled once its chunks are here, not after the last blob
    of the version (with 8 agents sharing 1 GiB that tail was 37 s)."""
    monkeypatch.setattr(service, "MOUNT_GRACE", 0.2)
    controller = load_or_create_identity(tmp_path / "controller", "controller")
    files = {"early.bin": os.urandom(CHUNK_BYTES + 1000), "late.bin": os.urandom(CHUNK_BYTES + 2000)}
    version = _version(files)
    sha = {e.path: e.sha256 for e in version.entries}
    peer = _Peer(loop, tmp_path / "peer", controller, version)
    peer.blobs.path(sha["late.bin"]).unlink()  # it comes to the peer 2 s in
    reader = _reader(tmp_path / "reader", version)
    ticket, signature = make_ticket(controller, "reader", [version.content_id], ttl=60, job_id="job-1")
    mount = DatasetMount("pets", 1, version.content_id, "", (peer.source(list(sha.values())),), ticket, signature)
    seen_early: list[bool] = []
    look = threading.Timer(1.6, lambda: seen_early.append(reader.blobs.has(sha["early.bin"])))
    to_peer = threading.Timer(2.0, lambda: _put(peer.blobs, files["late.bin"]))
    look.start()
    to_peer.start()
    try:
        held = reader.acquire(mount)
        assert seen_early == [True]  # assembled while late.bin's chunks were still on their way
        for path, data in files.items():
            assert (held.path / path).read_bytes() == data
        assert held.assembled == 2, held
    finally:
        look.cancel()
        to_peer.cancel()
        peer.stop()


def test_a_stream_broken_mid_blob_by_the_only_holder_is_resumed_from_it(tmp_path: Path, loop: _Loop) -> None:
    """A connection reset mid-blob (a keepalive ping lost on a saturated link) does not drop a peer that was
    serving: the blob is asked again from its offset; with no other holder it would otherwise fail SETUP."""
    controller = load_or_create_identity(tmp_path / "controller", "controller")
    files = {"big.bin": os.urandom(CHUNK_BYTES + 4321)}
    version = _version(files)
    peer = _Peer(loop, tmp_path / "peer", controller, version, break_after=2 * (1 << 20))
    reader = _reader(tmp_path / "reader", version)
    ticket, signature = make_ticket(controller, "reader", [version.content_id], ttl=60, job_id="job-1")
    holds = [e.sha256 for e in version.entries]
    mount = DatasetMount("pets", 1, version.content_id, "", (peer.source(holds),), ticket, signature)
    try:
        held = reader.acquire(mount)
        assert (held.path / "big.bin").read_bytes() == files["big.bin"]
        transfer = held.transfer()
        assert peer.broke and transfer.peer_failures >= 1, transfer
        assert transfer.bytes_from_peers == len(files["big.bin"]), transfer  # resumed, nothing fetched twice
        assert any(off > 0 for _sha, off in peer.offsets), peer.offsets
    finally:
        peer.stop()


def test_get_peer_blob_refuses_tickets_it_should_not_honour(tmp_path: Path, loop: _Loop) -> None:
    controller = load_or_create_identity(tmp_path / "controller", "controller")
    stranger = load_or_create_identity(tmp_path / "stranger", "controller")
    v1 = _version({"a.txt": b"version one"})
    v2 = _version({"a.txt": b"version two!"})
    peer = _Peer(loop, tmp_path / "peer", controller, v1)
    for data in v2.files.values():
        _put(peer.blobs, data)
    _put(peer.blobs, v2.manifest)
    v1_file, v2_file = v1.entries[0].sha256, v2.entries[0].sha256
    channel = peer_channel(f"127.0.0.1:{peer.port}", peer.identity.fingerprint)

    def get(ticket: tuple[bytes, bytes], sha: str) -> bytes:
        return b"".join(x for x in PeerBlobCall(channel, *ticket, sha, 0, 10) if isinstance(x, bytes))

    def refused(ticket: tuple[bytes, bytes], sha: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            get(ticket, sha)
        error: Any = caught.value
        return error.code(), error.details()

    try:
        assert get(make_ticket(controller, "r", [v1.content_id], 60), v1_file) == b"version one"
        code, why = refused(make_ticket(controller, "r", [v1.content_id], 60), v2_file)  # another version
        assert code == grpc.StatusCode.PERMISSION_DENIED and "not part of the dataset versions" in why
        code, why = refused(make_ticket(controller, "r", [v1.content_id], -1), v1_file)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "expired" in why
        code, why = refused((make_ticket(controller, "r", [v1.content_id], 60)[0], b""), v1_file)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "unsigned" in why
        code, why = refused(make_ticket(stranger, "r", [v1.content_id], 60), v1_file)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "not paired" in why
        code, why = refused(make_ticket(controller, "r", ["e" * 64], 60), v1_file)
        assert code == grpc.StatusCode.NOT_FOUND and "holds none" in why
        with pytest.raises(PeerIdentityError, match="not "):
            peer_channel(f"127.0.0.1:{peer.port}", "0" * 64)

        # A blob on its way in (a PutBlob under way) is waited for rather than refused: a reader may be named a
        # peer that is being sent the blob now.
        v3 = _version({"late.txt": b"arrives while asked for"})
        _put(peer.blobs, v3.manifest)
        writer = peer.blobs.writer(v3.entries[0].sha256, v3.entries[0].size)

        def land() -> None:
            writer.write(v3.files["late.txt"])
            writer.commit()

        threading.Timer(0.5, land).start()
        started = time.monotonic()
        assert get(make_ticket(controller, "r", [v3.content_id], 60), v3.entries[0].sha256) == v3.files["late.txt"]
        assert time.monotonic() - started >= 0.4

        async def list_cache() -> dict[str, Any]:  # a controller's session call (ListCache is not public)
            async with AgentClient(f"127.0.0.1:{peer.port}", AgentTrust(peer.identity.cert_pem, controller)) as c:
                return await c.list_cache()

        cache = loop.run(list_cache())
        held = [v1.entries[0].sha256, v1.content_id, v2.entries[0].sha256, v2.content_id, v3.entries[0].sha256]
        held.append(v3.content_id)
        assert cache["blobs"] == 6 and cache["blob_bytes"] == sum(peer.blobs.size(s) for s in held), cache
        assert cache["limit_bytes"] == 1 << 30 and cache["trees"] == []
    finally:
        channel.close()
        peer.stop()
