"""AgentService: validates each request, calls the executor, maps errors to gRPC statuses."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import agent_pb2_grpc as pb_grpc
from tensorfleet_agent.core.errors import (
    AgentError,
    AlreadyExists,
    NotFound,
    PermissionDenied,
    ProtocolMismatch,
    ResourcesExhausted,
    Unavailable,
    ValidationError,
)
from tensorfleet_agent.core.types import NodeInfo
from tensorfleet_agent.core.validation import MAX_CHECKPOINT_GRACE, MAX_REASON, check_id, check_text, validate_task_spec
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.desk.monitor import DeskMonitor
from tensorfleet_agent.rpc import convert, handlers
from tensorfleet_agent.rpc.task_stream_agent import TaskStream
from tensorfleet_agent.runtime import transfer, wake_on_lan
from tensorfleet_agent.runtime.blobs import CHUNK_BYTES, BlobStore, check_sha256
from tensorfleet_agent.runtime.executor import Executor
from tensorfleet_agent.runtime.peer_blobs import PeerBlobs, Piece
from tensorfleet_agent.runtime.power import IdleSuspender
from tensorfleet_agent.runtime.telemetry import TelemetrySampler
from tensorfleet_agent.security.authority import AuthError, Authority
from tensorfleet_agent.security.interceptor import bearer
from tensorfleet_agent.security.tickets import check_ticket
from tensorfleet_agent.workloads.registry import get_workload

log = logging.getLogger(__name__)

_STATUS: dict[type[AgentError], grpc.StatusCode] = {
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    ResourcesExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ProtocolMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}
SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
MIN_PERIOD, MAX_PERIOD, DEFAULT_PERIOD = 0.05, 3600.0, 1.0
MAX_HAS_BLOBS = 10_000
INCOMING_WAIT = 20.0  # seconds a peer asked for a blob it is receiving waits for it (less than a reader's deadline)
FIRST_EVENTS_WAIT = 1.0  # seconds WatchTask's acceptance waits for the task's first committed events
MOUNT_GRACE = 3.0  # ... asked for a blob of a version it holds the manifest of, waits for it to be on its way

R = TypeVar("R")


def _status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, AgentError):
        return _STATUS.get(type(exc), grpc.StatusCode.INTERNAL), str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("disk full: %s", exc)
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"the agent's disk is full: {exc.strerror} ({exc.filename or ''})"
    log.exception("internal error in RPC")
    return grpc.StatusCode.INTERNAL, f"internal agent error: {type(exc).__name__}: {exc}"


_unary = handlers.unary(_status_of)
_stream = handlers.stream(_status_of)


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        executor: Executor,
        blobs: BlobStore,
        sampler: TelemetrySampler,
        node_info: Callable[[], NodeInfo],
        authority: Authority | None = None,
        allow_scripts: bool = True,
        power: IdleSuspender | None = None,
        desk: DeskMonitor | None = None,
    ) -> None:
        self.executor = executor
        self.blobs = blobs
        self.sampler = sampler
        self.node_info = node_info
        self.authority = authority
        self.allow_scripts = allow_scripts
        self.peer_blobs = PeerBlobs(blobs)
        self.power = power
        self.desk = desk

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AgentServiceServicer_to_server(self, server)
        # WatchTask sends the journal's bytes as they are (no serializer): they are TaskEventBatch messages already.
        watch = grpc.unary_stream_rpc_method_handler(
            self.WatchTask, request_deserializer=pb.WatchTaskRequest.FromString, response_serializer=None
        )
        tasks = grpc.stream_stream_rpc_method_handler(
            self.Tasks, request_deserializer=pb.TasksRequest.FromString, response_serializer=None
        )
        handlers = {"WatchTask": watch, "Tasks": tasks}
        server.add_registered_method_handlers(SERVICE, handlers)  # type: ignore[attr-defined]  # (stubs lag)

    @_unary
    async def GetInfo(self, request: pb.GetInfoRequest, context: Any) -> pb.NodeInfo:
        info = await asyncio.to_thread(self.node_info)
        return convert.node_info_to_pb(info)

    @_stream
    async def StreamTelemetry(self, request: pb.TelemetryRequest, context: Any) -> AsyncIterator[pb.Telemetry]:
        period = request.period_seconds or DEFAULT_PERIOD
        if not math.isfinite(period) or not MIN_PERIOD <= period <= MAX_PERIOD:
            raise ValidationError(
                "period_seconds", f"must be between {MIN_PERIOD} and {MAX_PERIOD} seconds, got {period}"
            )
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        session = bearer(context.invocation_metadata())
        if self.power is not None:
            self.power.telemetry_period(period)
        while True:
            if self.authority is not None and self.authority.check(session) is None:
                raise PermissionDenied("this controller's session ended: it was unpaired")
            slots = self.executor.slots
            sample = await asyncio.to_thread(self.sampler.sample, slots.total, slots.free, self.executor.tasks_running)
            sleepy = self.power is not None and self.power.going_to_sleep
            desk = self.desk.status() if self.desk is not None else None
            sample = dataclasses.replace(sample, draining=self.executor.draining, going_to_sleep=sleepy, desk=desk)
            yield convert.telemetry_to_pb(sample)
            if self.power is not None:
                self.power.telemetry_sent(sleepy)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    @_unary
    async def RunTask(self, request: pb.RunTaskRequest, context: Any) -> pb.RunTaskResponse:
        return await self._accept(request)

    async def _accept(self, request: pb.RunTaskRequest) -> pb.RunTaskResponse:
        """RunTask's work, also WatchTask's when it is asked to start its task (WatchTaskRequest.run)."""
        if request.protocol_version != PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"caller speaks TensorFleet protocol {request.protocol_version or 'unknown (unset)'}, "
                f"this agent speaks {PROTOCOL_VERSION}; upgrade the older side"
            )
        if not request.HasField("spec"):
            raise ValidationError("spec", "is required")
        spec = validate_task_spec(convert.task_spec_from_pb(request.spec))
        if get_workload(spec.workload).category == "script" and not self.allow_scripts:
            raise ProtocolMismatch("this agent runs no user scripts (started with --no-scripts)")
        if self.desk is not None:
            self.desk.check_lending()  # refused while the workstation's owner uses it
        if self.power is not None:
            self.power.task_arriving()  # cancels a suspend being announced; refused once it runs
        slot_ids = await self.executor.run_task(spec)
        shared = self.executor.shared_gpu(spec, slot_ids)  # the GPU its share went to: the controller counts it there
        gpu, memory = shared if shared is not None else (0, 0)
        return pb.RunTaskResponse(
            task_id=spec.task_id, slot_ids=list(slot_ids), shared_gpu_index=gpu, shared_gpu_bytes=memory
        )

    @_stream
    def WatchTask(  # type: ignore[override]  # bytes on the wire: see register()
        self, request: pb.WatchTaskRequest, context: Any
    ) -> AsyncIterator[bytes]:
        """Serialized TaskEventBatch messages: many events each, never decoded and encoded again here. With `run`,
        the task is started first and the acceptance is the first message: the controller's way to send a task
        without a second call (and a second round trip) before its events can flow. That message also carries the
        events committed by then (the ACCEPTED at least, written at once when the journal made the task's file
        ahead): one message less per task. A journal that cannot commit within FIRST_EVENTS_WAIT (a full disk)
        lets the acceptance go alone."""
        return self._watch_batches(request)  # the same generator as each watch of Tasks, not one around it

    @_stream
    async def Tasks(  # type: ignore[override]  # bytes on the wire: see register()
        self, requests: AsyncIterator[pb.TasksRequest], context: Any
    ) -> AsyncIterator[bytes]:
        """WatchTask calls as watches on one stream (rpc/task_stream_agent.py)."""
        session = bearer(context.invocation_metadata())
        authority = self.authority
        allowed = (lambda: True) if authority is None else (lambda: authority.check(session) is not None)
        async for response in TaskStream(self._watch_batches, _status_of, allowed).serve(requests):
            yield response

    async def _watch_batches(self, request: pb.WatchTaskRequest) -> AsyncIterator[bytes]:
        """WatchTask's messages, serialized; also each watch's of Tasks."""
        check_id(request.task_id, "task_id")
        if request.after_seq < 0:
            raise ValidationError("after_seq", f"must be >= 0, got {request.after_seq}")
        if request.HasField("run"):
            if request.run.spec.task_id != request.task_id:
                raise ValidationError(
                    "run.spec.task_id",
                    f"must be the watched task_id {request.task_id!r}, got {request.run.spec.task_id!r}",
                )
            accepted = pb.TaskEventBatch(accepted=await self._accept(request.run)).SerializeToString()
            first = self.executor.watch(request.task_id, request.after_seq)
            try:
                async with asyncio.timeout(FIRST_EVENTS_WAIT):
                    batch = await anext(first, b"")
            except TimeoutError:  # the watch is closed; a new one below starts where it would have
                yield accepted
            else:
                yield accepted + batch  # two serialized messages concatenated are their fields merged: one batch
                async for batch in first:
                    yield batch
                return
        async for batch in self.executor.watch(request.task_id, request.after_seq):
            yield batch

    @_unary
    async def CancelTask(self, request: pb.CancelTaskRequest, context: Any) -> pb.CancelTaskResponse:
        check_id(request.task_id, "task_id")
        check_text(request.reason, "reason", MAX_REASON)
        grace = request.checkpoint_grace_seconds
        if not 0 <= grace <= MAX_CHECKPOINT_GRACE:
            raise ValidationError(
                "checkpoint_grace_seconds", f"must be between 0 and {MAX_CHECKPOINT_GRACE:g}, got {grace:g}"
            )
        if request.preempt:  # a more important job takes its room: it ends PREEMPTED and is queued again
            was_running = await self.executor.preempt(request.task_id, request.reason, grace)
        else:
            was_running = await self.executor.cancel(request.task_id, request.reason, checkpoint_grace=grace)
        return pb.CancelTaskResponse(was_running=was_running)

    @_unary
    async def ListTasks(self, request: pb.ListTasksRequest, context: Any) -> pb.ListTasksResponse:
        tasks = self.executor.list_tasks(request.include_finished)
        return pb.ListTasksResponse(tasks=[convert.summary_to_pb(t) for t in tasks])

    @_unary
    async def ListEnvs(self, request: pb.ListEnvsRequest, context: Any) -> pb.ListEnvsResponse:
        envs = self.executor.envs
        return convert.list_envs_to_pb(await envs.list(), envs.limit_bytes)

    @_unary
    async def PruneEnvs(self, request: pb.PruneEnvsRequest, context: Any) -> pb.PruneEnvsResponse:
        if request.keep_bytes < 0:
            raise ValidationError("keep_bytes", f"must be >= 0 (0 removes every unused env), got {request.keep_bytes}")
        envs = self.executor.envs
        sizes = {e.key: e.size for e in await envs.list()}
        removed = await envs.prune(request.keep_bytes)  # envs a running task holds are never removed
        if removed:
            log.info("pruned %d env(s) on request, keeping at most %d bytes", len(removed), request.keep_bytes)
        return pb.PruneEnvsResponse(removed=removed, freed_bytes=sum(sizes.get(key, 0) for key in removed))

    @_unary
    async def HasBlobs(self, request: pb.HasBlobsRequest, context: Any) -> pb.HasBlobsResponse:
        if len(request.sha256) > MAX_HAS_BLOBS:
            raise ValidationError("sha256", f"asks for {len(request.sha256)} blobs; at most {MAX_HAS_BLOBS}")
        for i, digest in enumerate(request.sha256):
            check_sha256(digest, f"sha256[{i}]")
        present = await asyncio.to_thread(lambda: [d for d in request.sha256 if self.blobs.has(d)])
        return pb.HasBlobsResponse(present=present)

    @_unary
    async def FetchBlob(self, request: pb.FetchBlobRequest, context: Any) -> pb.PutBlobResponse:
        check_sha256(request.sha256, "sha256")
        transfer.check_url(request.url, "url")
        if request.size < 0:
            raise ValidationError("size", f"must be >= 0, got {request.size}")
        if await asyncio.to_thread(self.blobs.has, request.sha256):
            return pb.PutBlobResponse(sha256=request.sha256, size=request.size, already_present=True)
        await asyncio.to_thread(transfer.fetch, self.blobs, request.sha256, request.size, request.url)
        self.blobs.note_received(request.sha256, request.size, "store")
        log.info("fetched blob %s (%d bytes) from the object store", request.sha256[:12], request.size)
        return pb.PutBlobResponse(sha256=request.sha256, size=request.size)

    @_unary
    async def PushBlob(self, request: pb.PushBlobRequest, context: Any) -> pb.PushBlobResponse:
        check_sha256(request.sha256, "sha256")
        transfer.check_url(request.url, "url")
        if not await asyncio.to_thread(self.blobs.has, request.sha256):
            raise NotFound(f"blob {request.sha256} is not on this agent")
        size = await asyncio.to_thread(transfer.push, self.blobs, request.sha256, request.url)
        log.info("pushed blob %s (%d bytes) to the object store", request.sha256[:12], size)
        return pb.PushBlobResponse(size=size)

    @_unary
    async def PutBlob(self, request_iterator: AsyncIterator[pb.BlobChunk], context: Any) -> pb.PutBlobResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise ValidationError("header", "the first message of PutBlob must be a BlobHeader")
        header = first.header
        check_sha256(header.sha256, "header.sha256")
        if await asyncio.to_thread(self.blobs.has, header.sha256):
            async for _ in request_iterator:  # drain what the client already sent
                pass
            return pb.PutBlobResponse(sha256=header.sha256, size=header.size, already_present=True)
        writer = await asyncio.to_thread(self.blobs.writer, header.sha256, header.size)
        try:
            async for chunk in request_iterator:
                if chunk.WhichOneof("part") != "data":
                    raise ValidationError("header", "only the first message of PutBlob may be a header")
                if len(chunk.data) > CHUNK_BYTES:
                    raise ValidationError("data", f"chunks must be at most {CHUNK_BYTES} bytes, got {len(chunk.data)}")
                await asyncio.to_thread(writer.write, chunk.data)
            await asyncio.to_thread(writer.commit)
        except BaseException:
            await asyncio.to_thread(writer.abort)
            raise
        self.blobs.note_received(header.sha256, header.size, "controller")
        return pb.PutBlobResponse(sha256=header.sha256, size=header.size)

    @_stream
    async def GetPeerBlob(self, request: pb.GetPeerBlobRequest, context: Any) -> AsyncIterator[pb.BlobChunk]:
        """A dataset blob for a peer agent: the ticket (signed by a paired controller, not expired) must name a
        version this agent holds whose manifest names the blob; a chunk of an assembled file is a range of it."""
        ticket = await asyncio.to_thread(check_ticket, self.authority, request.ticket, request.ticket_signature)
        piece = await self._locate(ticket.content_ids, request.sha256)
        if not 0 <= request.offset <= piece.length:
            raise ValidationError("offset", f"must be between 0 and the blob size {piece.length}, got {request.offset}")
        log.debug("serving %s to peer %s (job %s)", request.sha256[:12], ticket.reader_node_id[:12], ticket.job_id)
        yield pb.BlobChunk(header=pb.BlobHeader(sha256=request.sha256, size=piece.length))
        async for data in self.peer_blobs.stream(piece, request.offset):  # its own threads, not the loop's
            yield pb.BlobChunk(data=data)

    async def _locate(self, content_ids: frozenset[str], sha256: str) -> Piece:
        """Where the blob is; one on its way in (the manifest first) is waited for, up to INCOMING_WAIT each. One
        that a version held here names but that is not on its way yet is waited for up to MOUNT_GRACE to become
        so: the controller names a reader as the holder of its share as it dispatches it, and a peer may ask just
        before that reader's mount starts and marks its share incoming (it was refused, asked again 1 s later)."""
        for _ in range(3):
            try:
                return await asyncio.to_thread(self.peer_blobs.locate, content_ids, sha256)
            except NotFound:
                coming = [d for d in (*sorted(content_ids), sha256) if self.blobs.incoming(d)]
                if coming:
                    if not await self.blobs.arrived(coming[0], INCOMING_WAIT):  # no thread held
                        raise
                else:
                    manifest_here = any(self.blobs.has(c) for c in content_ids)
                    if not manifest_here or not await self.blobs.announced(sha256, MOUNT_GRACE):
                        raise
        return await asyncio.to_thread(self.peer_blobs.locate, content_ids, sha256)

    @_unary
    async def ListCache(self, request: pb.ListCacheRequest, context: Any) -> pb.ListCacheResponse:
        blobs, size = await asyncio.to_thread(self.blobs.usage)
        trees = [dataclasses.asdict(t) for t in self.executor.datasets.trees()]
        return convert.list_cache_to_pb(blobs, size, self.blobs.limit_bytes, trees)

    def _authority(self) -> Authority:
        if self.authority is None:
            raise Unavailable("this agent runs with --insecure: no pairing, every caller may run work")
        return self.authority

    @_unary
    async def PairBegin(self, request: pb.PairBeginRequest, context: Any) -> pb.PairBeginResponse:
        return pb.PairBeginResponse(agent_nonce=self._authority().nonce())

    @_unary
    async def PairFinish(self, request: pb.PairFinishRequest, context: Any) -> pb.PairFinishResponse:
        authority = self._authority()
        try:
            agent_proof = await asyncio.to_thread(
                authority.pair,
                request.controller_cert_pem,
                request.agent_nonce,
                request.proof,
                request.controller_nonce,
            )
        except AuthError as exc:
            raise PermissionDenied(str(exc)) from None
        return pb.PairFinishResponse(agent_proof=agent_proof)

    @_unary
    async def GetChallenge(self, request: pb.ChallengeRequest, context: Any) -> pb.Challenge:
        return pb.Challenge(nonce=self._authority().nonce())

    @_unary
    async def SendWakePacket(self, request: pb.SendWakePacketRequest, context: Any) -> pb.SendWakePacketResponse:
        """Wake-on-LAN for a sleeping peer, asked by a paired controller that is not on its subnet: one magic packet,
        broadcast only on a subnet this machine is on (never a relay to anywhere else)."""
        port = request.port or wake_on_lan.WAKE_PORT
        if not 0 < port < 65536:
            raise ValidationError("port", f"must be 1..65535 (0: {wake_on_lan.WAKE_PORT}), got {request.port}")
        try:
            wake_on_lan.parse_mac(request.mac)
        except ValueError as exc:
            raise ValidationError("mac", str(exc)) from None
        subnets = await asyncio.to_thread(wake_on_lan.local_subnets)
        try:
            subnet = wake_on_lan.check_broadcast(request.broadcast, subnets)
        except ValueError as exc:
            raise ValidationError("broadcast", str(exc)) from None
        try:
            await asyncio.to_thread(wake_on_lan.send_magic_packet, request.mac, subnet, port)
        except OSError as exc:
            raise Unavailable(f"cannot send the magic packet on {subnet.interface}: {exc.strerror or exc}") from None
        log.info("magic packet for %s sent to %s:%d on %s", request.mac, subnet.broadcast, port, subnet.interface)
        return pb.SendWakePacketResponse(interface=subnet.interface)

    @_unary
    async def Authenticate(self, request: pb.AuthenticateRequest, context: Any) -> pb.AuthenticateResponse:
        authority = self._authority()
        try:
            token, ttl = await asyncio.to_thread(
                authority.authenticate, request.controller_cert_pem, request.nonce, request.signature
            )
        except AuthError as exc:
            raise PermissionDenied(str(exc)) from None
        return pb.AuthenticateResponse(session_token=token, expires_in_seconds=ttl)

    @_stream
    async def GetBlob(self, request: pb.GetBlobRequest, context: Any) -> AsyncIterator[pb.BlobChunk]:
        check_sha256(request.sha256, "sha256")
        size = await asyncio.to_thread(self.blobs.size, request.sha256)
        if not 0 <= request.offset <= size:
            raise ValidationError("offset", f"must be between 0 and the blob size {size}, got {request.offset}")
        yield pb.BlobChunk(header=pb.BlobHeader(sha256=request.sha256, size=size))
        chunks: Iterator[bytes] = await asyncio.to_thread(self.blobs.read, request.sha256, request.offset)
        while (data := await asyncio.to_thread(next, chunks, None)) is not None:
            yield pb.BlobChunk(data=data)
