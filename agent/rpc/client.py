"""The one place that builds gRPC channels, and an async AgentService client over plain dataclasses.

A secure client pins the agent's certificate (trust on first use is the caller's decision: see
`fetch_certificate`), authenticates with the controller's key for a session, and, given a cluster
token, pairs by itself when the agent does not know it yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import ssl
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import agent_pb2_grpc as pb_grpc
from tensorfleet_agent.core.digest import file_digest
from tensorfleet_agent.core.types import NodeInfo, TaskEvent, TaskSpec, TaskSummary, Telemetry
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.identity import Identity, node_id_of_cert
from tensorfleet_agent.rpc import convert
from tensorfleet_agent.rpc.server import MAX_MESSAGE_BYTES
from tensorfleet_agent.rpc.task_stream_caller import TaskStream, Watch, rpc_error
from tensorfleet_agent.security.secrets import proof, token_key

CHUNK_BYTES = 1 << 20
T = TypeVar("T")

CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def _options(target_name: str | None) -> list[tuple[str, Any]]:
    options = list(CHANNEL_OPTIONS)
    if target_name:
        options.append(("grpc.ssl_target_name_override", target_name))
    return options


def create_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, target_name: str | None = None
) -> grpc.aio.Channel:
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=_options(target_name))
    return grpc.aio.insecure_channel(address, options=_options(None))


def create_sync_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, target_name: str | None = None
) -> grpc.Channel:
    """Blocking twin of create_channel, for the synchronous SDK."""
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=_options(target_name))
    return grpc.insecure_channel(address, options=_options(None))


def pinned_credentials(cert_pem: bytes) -> grpc.ChannelCredentials:
    """TLS that trusts exactly this (self-signed) certificate."""
    return grpc.ssl_channel_credentials(root_certificates=cert_pem)


def fetch_certificate_blocking(address: str, timeout: float = 5.0) -> bytes:
    """The PEM certificate a TLS server presents (no verification: the caller pins or compares it)."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname=None) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{address} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode()


async def fetch_certificate(address: str, timeout: float = 5.0) -> bytes:
    return await asyncio.to_thread(fetch_certificate_blocking, address, timeout)


class PeerIdentityError(Exception):
    """A peer agent's TLS certificate is not the one the controller pinned for it."""


def peer_channel(address: str, cert_fingerprint: str, timeout: float = 5.0) -> grpc.Channel:
    """A blocking channel to a peer agent (dataset blobs, issue 20) whose TLS certificate must be the one with
    `cert_fingerprint` (as the controller pinned it): the certificate is read, compared, then trusted alone, so a
    machine without that key cannot answer. "" (an --insecure agent on loopback): plaintext."""
    if not cert_fingerprint:
        return create_sync_channel(address)
    pem = fetch_certificate_blocking(address, timeout)
    node_id, fingerprint = node_id_of_cert(pem)
    if fingerprint != cert_fingerprint.lower():
        raise PeerIdentityError(
            f"{address} presents certificate {fingerprint[:16]}, not {cert_fingerprint[:16]} as the controller "
            "pinned it for that agent"
        )
    return create_sync_channel(address, pinned_credentials(pem), node_id)


class PeerBlobCall:
    """One GetPeerBlob stream from a peer agent (blocking): iterating gives the blob's size (an int) first, then its
    bytes from `offset`; grpc.RpcError as the stream fails; cancel() ends it early (from any thread)."""

    def __init__(
        self, channel: grpc.Channel, ticket: bytes, signature: bytes, sha256: str, offset: int, timeout: float
    ) -> None:
        request = pb.GetPeerBlobRequest(ticket=ticket, ticket_signature=signature, sha256=sha256, offset=offset)
        self._call = pb_grpc.AgentServiceStub(channel).GetPeerBlob(request, timeout=timeout)

    def __iter__(self) -> Iterator[int | bytes]:
        for msg in self._call:
            if msg.WhichOneof("part") == "header":
                yield int(msg.header.size)
            else:
                yield bytes(msg.data)

    def cancel(self) -> None:
        self._call.cancel()  # type: ignore[no-untyped-call]


def _deadline(details: str) -> grpc.aio.AioRpcError:
    """The error a call's own deadline raises, for a wait bounded by hand (a stream's first message)."""
    return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, details)


@dataclass(frozen=True)
class AgentTrust:
    """How a controller talks to one agent: the pinned agent certificate and the controller's identity."""

    agent_cert_pem: bytes
    identity: Identity
    pair_token: str = ""  # a cluster token: pair automatically when the agent does not know us

    @property
    def agent_node_id(self) -> str:
        return node_id_of_cert(self.agent_cert_pem)[0]

    @property
    def agent_fingerprint(self) -> str:
        return node_id_of_cert(self.agent_cert_pem)[1]


_END_GRACE = 2.0  # seconds a watch its reader dropped may take to end before it is unwatched


class EventStream(AsyncGenerator[TaskEvent, None]):
    """A hand-written stream of a task's events: __anext__ and aclose are its own; asend and athrow, which the
    AsyncGenerator protocol asks for, follow from them."""

    async def asend(self, value: None) -> TaskEvent:
        return await self.__anext__()

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> TaskEvent:
        await self.aclose()
        raise typ if val is None else val


class TaskEvents(EventStream):
    """A task's events from one watch on the client's Tasks stream (WatchTask's messages, rpc/task_stream_caller.py):
    an async generator a reader leaves early (the controller stops at the task's end) is finalized by the event loop
    in a task of its own, with a wake-up of the loop, for each layer of generators; this object is simply dropped,
    and its watch left if its end has not come by then."""

    def __init__(self, watch: Watch) -> None:
        self._watch = watch
        self._batch: Sequence[Any] = ()
        self._next = 0

    async def next_message(self) -> Any:
        """The watch's next message; None at its end."""
        try:
            return await self._watch.next_message()
        except BaseException:  # its error, or its reader cancelled: the watch ends with it
            self._watch.leave()
            raise

    def pending(self, events: Sequence[Any]) -> None:
        """Events of a message read by next_message: the next ones __anext__ gives."""
        self._batch, self._next = events, 0

    async def __anext__(self) -> TaskEvent:
        while self._next >= len(self._batch):
            msg = await self.next_message()
            if msg is None:
                raise StopAsyncIteration
            self._batch, self._next = msg.events, 0
        self._next += 1
        return convert.event_from_pb(self._batch[self._next - 1])

    async def aclose(self) -> None:
        """Stop following (the task runs on)."""
        self._watch.leave()

    def __del__(self) -> None:
        """Dropped by its reader: at the task's end, whose end item is on its way (an unwatch now would be a
        message for nothing), so the watch is left only if still open after a grace period (a reader that left a
        task still running)."""
        watch = getattr(self, "_watch", None)  # None too when __init__ failed
        if watch is None or watch.ended:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # dropped off the loop: its stream goes with the client
            return
        loop.call_later(_END_GRACE, watch.leave)


class PairingError(Exception):
    """Pairing failed: wrong or expired token, or the agent could not prove it knows the token."""


class AgentClient:
    """AgentService over one channel, speaking core dataclasses."""

    def __init__(self, address: str, trust: AgentTrust | None = None) -> None:
        self.address = address
        self.trust = trust
        if trust is not None:
            self.channel = create_channel(address, pinned_credentials(trust.agent_cert_pem), trust.agent_node_id)
        else:
            self.channel = create_channel(address)
        self.stub = pb_grpc.AgentServiceStub(self.channel)
        self._session = ""
        self._session_lock = asyncio.Lock()
        self._tasks: TaskStream | None = None

    async def close(self) -> None:
        if self._tasks is not None:
            self._tasks.close()
        await self.channel.close(None)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- pairing and sessions

    async def pair(self, token: str, timeout: float = 10.0) -> None:
        """Prove the token to the agent (without sending it) and check the agent knows it too."""
        if self.trust is None:
            raise PairingError("this connection is insecure; there is nothing to pair")
        me = self.trust.identity
        begin = await self.stub.PairBegin(pb.PairBeginRequest(controller_cert_pem=me.cert_pem), timeout=timeout)
        key = token_key(token)
        agent_fp = self.trust.agent_fingerprint
        controller_nonce = secrets.token_bytes(32)
        request = pb.PairFinishRequest(
            controller_cert_pem=me.cert_pem,
            agent_nonce=begin.agent_nonce,
            proof=proof(key, b"tf-pair-controller", begin.agent_nonce, me.fingerprint, agent_fp),
            controller_nonce=controller_nonce,
        )
        try:
            reply = await self.stub.PairFinish(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise PairingError(str(exc.details())) from None
        expected = proof(key, b"tf-pair-agent", controller_nonce, me.fingerprint, agent_fp)
        if not secrets.compare_digest(reply.agent_proof, expected):
            raise PairingError("the agent could not prove it knows the token: refusing it")
        self._session = ""

    async def authenticate(self, timeout: float = 10.0) -> str:
        """A session token for work RPCs; pairs first with the cluster token if the agent asks for it."""
        if self.trust is None:
            return ""
        async with self._session_lock:
            if self._session:
                return self._session
            try:
                self._session = await self._authenticate(timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED or not self.trust.pair_token:
                    raise
                try:
                    await self.pair(self.trust.pair_token, timeout)
                except PairingError:
                    raise exc from None  # the agent does not share our token: it stays unpaired
                self._session = await self._authenticate(timeout)
            return self._session

    async def _authenticate(self, timeout: float) -> str:
        assert self.trust is not None
        me = self.trust.identity
        challenge = await self.stub.GetChallenge(pb.ChallengeRequest(), timeout=timeout)
        signature = me.sign(b"tf-auth|" + challenge.nonce + b"|" + self.trust.agent_node_id.encode())
        reply = await self.stub.Authenticate(
            pb.AuthenticateRequest(controller_cert_pem=me.cert_pem, nonce=challenge.nonce, signature=signature),
            timeout=timeout,
        )
        return str(reply.session_token)

    async def session_metadata(self) -> tuple[tuple[str, str], ...]:
        if self.trust is None:
            return ()
        return (("authorization", f"Bearer {await self.authenticate()}"),)

    async def _call(self, fn: Callable[[tuple[tuple[str, str], ...]], Awaitable[T]]) -> T:
        """A work RPC with the session; after an agent restart the session is renewed once."""
        try:
            return await fn(await self.session_metadata())
        except grpc.aio.AioRpcError as exc:
            if not self._renewed(exc):
                raise
            return await fn(await self.session_metadata())

    def _renewed(self, exc: grpc.aio.AioRpcError) -> bool:
        """Whether a call refused for its session (an agent restart) may be made again once: the session is
        dropped, so the next session_metadata authenticates anew. Asked only before the call had any answer."""
        if exc.code() != grpc.StatusCode.UNAUTHENTICATED or self.trust is None:
            return False
        self._session = ""
        return True

    async def _stream(self, start: Callable[[tuple[tuple[str, str], ...]], Any]) -> AsyncGenerator[Any, None]:
        first = True
        while True:
            try:
                async for item in start(await self.session_metadata()):
                    first = False
                    yield item
                return
            except grpc.aio.AioRpcError as exc:
                if not first or not self._renewed(exc):
                    raise
                first = False

    # ---- AgentService

    async def get_info(self, timeout: float = 10.0) -> NodeInfo:
        return convert.node_info_from_pb(await self.stub.GetInfo(pb.GetInfoRequest(), timeout=timeout))

    async def telemetry(self, period_seconds: float = 1.0) -> AsyncIterator[Telemetry]:
        request = pb.TelemetryRequest(period_seconds=period_seconds)
        async for msg in self._stream(lambda md: self.stub.StreamTelemetry(request, metadata=md)):
            yield convert.telemetry_from_pb(msg)

    async def run_task(self, spec: TaskSpec, timeout: float = 30.0) -> convert.TaskAccepted:
        """The agent's slots for the task and, for a share of a GPU by memory, the GPU it chose and its bytes."""
        request = pb.RunTaskRequest(protocol_version=PROTOCOL_VERSION, spec=convert.task_spec_to_pb(spec))
        reply = await self._call(lambda md: self.stub.RunTask(request, timeout=timeout, metadata=md))
        return convert.accepted_from_pb(reply)

    def watch_task(self, task_id: str, after_seq: int = 0) -> TaskEvents:
        return self._watch(pb.WatchTaskRequest(task_id=task_id, after_seq=after_seq))

    def _watch(self, request: pb.WatchTaskRequest) -> TaskEvents:
        """A WatchTask call's messages, sent as a watch on the client's one Tasks stream."""
        watch = Watch(request)
        self._task_stream().watch(watch)
        return TaskEvents(watch)

    def _task_stream(self) -> TaskStream:
        stream = self._tasks
        if stream is None or stream.dead:
            stream = self._tasks = TaskStream(self._open_tasks, self.session_metadata, self._renewed, self._moved)
        return stream

    def _open_tasks(self, metadata: tuple[tuple[str, str], ...]) -> Any:
        # grpc.aio's request iterator is optional (the stubs say otherwise): the stream writes with write()
        return self.stub.Tasks(metadata=metadata)  # type: ignore[call-arg]

    def _moved(self, watches: list[Watch]) -> None:
        """Watches a stream's refused session left unanswered, sent again on a new stream."""
        for watch in watches:
            self._task_stream().watch(watch)

    async def run_and_watch(self, spec: TaskSpec, timeout: float = 30.0) -> tuple[convert.TaskAccepted, TaskEvents]:
        """Start the task and follow it in one call (WatchTaskRequest.run): its acceptance, then its events (close
        the iterator, or drop it, to stop following; the task runs on). A refusal raises as RunTask's would; no
        answer within `timeout` raises DEADLINE_EXCEEDED as RunTask's deadline would (the agent may have started
        the task)."""
        run = pb.RunTaskRequest(protocol_version=PROTOCOL_VERSION, spec=convert.task_spec_to_pb(spec))
        request = pb.WatchTaskRequest(task_id=spec.task_id, run=run)
        events = self._watch(request)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: no task of its own per call
                first = await events.next_message()
        except TimeoutError:
            await events.aclose()
            raise _deadline(f"no answer from the agent in {timeout:g}s to start task {spec.task_id}") from None
        except BaseException:
            await events.aclose()
            raise
        if first is None:
            raise _deadline(f"the agent ended the call to start task {spec.task_id} without an answer")
        events.pending(first.events)  # the events committed by the acceptance come in its message
        return convert.accepted_from_pb(first.accepted), events

    async def cancel_task(
        self,
        task_id: str,
        reason: str = "",
        timeout: float = 10.0,
        checkpoint_grace: float = 0.0,
        preempt: bool = False,
    ) -> bool:
        """checkpoint_grace > 0 asks the workload to checkpoint and stop first (how a job pauses); `preempt`: the
        task ends PREEMPTED (Executor.preempt), queued again by the controller rather than cancelled."""
        request = pb.CancelTaskRequest(
            task_id=task_id, reason=reason, checkpoint_grace_seconds=checkpoint_grace, preempt=preempt
        )
        reply = await self._call(lambda md: self.stub.CancelTask(request, timeout=timeout, metadata=md))
        return bool(reply.was_running)

    async def list_tasks(self, include_finished: bool = False, timeout: float = 10.0) -> list[TaskSummary]:
        request = pb.ListTasksRequest(include_finished=include_finished)
        reply = await self._call(lambda md: self.stub.ListTasks(request, timeout=timeout, metadata=md))
        return [convert.summary_from_pb(t) for t in reply.tasks]

    async def has_blobs(self, digests: Sequence[str], timeout: float = 10.0) -> set[str]:
        request = pb.HasBlobsRequest(sha256=list(digests))
        reply = await self._call(lambda md: self.stub.HasBlobs(request, timeout=timeout, metadata=md))
        return set(reply.present)

    async def put_blob(
        self, path: Path, sha256: str | None = None, on_progress: Callable[[], None] | None = None
    ) -> str:
        """Upload a file; returns its sha256. Without `sha256` the file is hashed first and the upload skipped when
        the agent has it; with it (a caller that asked HasBlobs already, for many blobs at once) it is sent as
        that content at once (the agent hashes what arrives and refuses a mismatch). `on_progress` is called as
        each chunk is taken for sending: past HTTP/2's flow-control window that happens only while the agent reads,
        so it proves the agent alive when its telemetry is late (a saturated link)."""
        if sha256 is None:
            digest, size = await asyncio.to_thread(file_digest, path)
            if digest in await self.has_blobs([digest]):
                return digest
        else:
            digest, size = sha256, (await asyncio.to_thread(path.stat)).st_size

        async def chunks() -> AsyncIterator[pb.BlobChunk]:
            yield pb.BlobChunk(header=pb.BlobHeader(sha256=digest, size=size))
            with path.open("rb") as fh:
                while data := await asyncio.to_thread(fh.read, CHUNK_BYTES):
                    if on_progress is not None:
                        on_progress()
                    yield pb.BlobChunk(data=data)

        await self._call(lambda md: self.stub.PutBlob(chunks(), metadata=md))
        return digest

    async def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()

        async def chunks() -> AsyncIterator[pb.BlobChunk]:
            yield pb.BlobChunk(header=pb.BlobHeader(sha256=digest, size=len(data)))
            for offset in range(0, len(data), CHUNK_BYTES):
                yield pb.BlobChunk(data=data[offset : offset + CHUNK_BYTES])

        await self._call(lambda md: self.stub.PutBlob(chunks(), metadata=md))
        return digest

    async def fetch_blob(self, sha256: str, size: int, url: str, timeout: float = 600.0) -> bool:
        """Have the agent download a blob from a presigned URL; False when it already had it."""
        request = pb.FetchBlobRequest(sha256=sha256, size=size, url=url)
        reply = await self._call(lambda md: self.stub.FetchBlob(request, timeout=timeout, metadata=md))
        return not reply.already_present

    async def push_blob(self, sha256: str, url: str, timeout: float = 600.0) -> int:
        """Have the agent upload one of its blobs to a presigned URL; returns the size sent."""
        request = pb.PushBlobRequest(sha256=sha256, url=url)
        reply = await self._call(lambda md: self.stub.PushBlob(request, timeout=timeout, metadata=md))
        return int(reply.size)

    async def list_envs(self, timeout: float = 10.0) -> dict[str, Any]:
        """The agent's cached project envs: {"envs": [dicts with convert.ENV_SUMMARY_KEYS, most recently used
        first], "limit_bytes"}."""
        reply = await self._call(lambda md: self.stub.ListEnvs(pb.ListEnvsRequest(), timeout=timeout, metadata=md))
        return convert.list_envs_from_pb(reply)

    async def prune_envs(self, keep_bytes: int = 0, timeout: float = 120.0) -> dict[str, Any]:
        """Remove the agent's unused envs, least recently used first, until at most `keep_bytes` remain:
        {"removed": [keys], "freed_bytes"}."""
        request = pb.PruneEnvsRequest(keep_bytes=keep_bytes)
        reply = await self._call(lambda md: self.stub.PruneEnvs(request, timeout=timeout, metadata=md))
        return convert.prune_envs_from_pb(reply)

    async def list_cache(self, timeout: float = 10.0) -> dict[str, Any]:
        """The agent's blob cache and dataset trees (convert.list_cache_from_pb's dict)."""
        reply = await self._call(lambda md: self.stub.ListCache(pb.ListCacheRequest(), timeout=timeout, metadata=md))
        return convert.list_cache_from_pb(reply)

    async def send_wake_packet(self, mac: str, broadcast: str, port: int = 0, timeout: float = 10.0) -> str:
        """Ask this agent to broadcast a Wake-on-LAN magic packet on its own subnet `broadcast`; returns the
        interface it left by (the agent refuses a subnet it is not on)."""
        request = pb.SendWakePacketRequest(mac=mac, broadcast=broadcast, port=port)
        reply = await self._call(lambda md: self.stub.SendWakePacket(request, timeout=timeout, metadata=md))
        return str(reply.interface)

    async def get_blob(self, sha256: str, dest: Path) -> int:
        """Download a blob to `dest`, verifying its sha256; returns its size."""
        hasher = hashlib.sha256()
        size = -1
        tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.part")  # unique: two copies of one blob never share it
        request = pb.GetBlobRequest(sha256=sha256)
        try:
            with tmp.open("wb") as fh:
                async for chunk in self._stream(lambda md: self.stub.GetBlob(request, metadata=md)):
                    if chunk.WhichOneof("part") == "header":
                        size = chunk.header.size
                        continue
                    hasher.update(chunk.data)
                    await asyncio.to_thread(fh.write, chunk.data)
        except BaseException:  # a full disk, a lost agent: no half file left behind
            tmp.unlink(missing_ok=True)
            raise
        if hasher.hexdigest() != sha256:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"blob {sha256} arrived corrupted (sha256 {hasher.hexdigest()})")
        tmp.replace(dest)
        return size
