"""The one place that builds gRPC channels, and an async AgentService client over plain dataclasses."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import agent_pb2_grpc as pb_grpc
from tensorfleet_agent.core.types import NodeInfo, TaskEvent, TaskSpec, TaskSummary, Telemetry
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.rpc import convert
from tensorfleet_agent.rpc.server import MAX_MESSAGE_BYTES

CHUNK_BYTES = 1 << 20

CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def create_channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=list(CHANNEL_OPTIONS))
    return grpc.aio.insecure_channel(address, options=list(CHANNEL_OPTIONS))


def create_sync_channel(address: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """Blocking twin of create_channel, for the synchronous SDK."""
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=list(CHANNEL_OPTIONS))
    return grpc.insecure_channel(address, options=list(CHANNEL_OPTIONS))


class AgentClient:
    """AgentService over one channel, speaking core dataclasses."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        self.channel = create_channel(address, credentials)
        self.stub = pb_grpc.AgentServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get_info(self, timeout: float = 10.0) -> NodeInfo:
        return convert.node_info_from_pb(await self.stub.GetInfo(pb.GetInfoRequest(), timeout=timeout))

    async def telemetry(self, period_seconds: float = 1.0) -> AsyncIterator[Telemetry]:
        async for msg in self.stub.StreamTelemetry(pb.TelemetryRequest(period_seconds=period_seconds)):
            yield convert.telemetry_from_pb(msg)

    async def run_task(self, spec: TaskSpec, timeout: float = 30.0) -> tuple[int, ...]:
        request = pb.RunTaskRequest(protocol_version=PROTOCOL_VERSION, spec=convert.task_spec_to_pb(spec))
        reply = await self.stub.RunTask(request, timeout=timeout)
        return tuple(reply.slot_ids)

    async def watch_task(self, task_id: str, after_seq: int = 0) -> AsyncIterator[TaskEvent]:
        async for msg in self.stub.WatchTask(pb.WatchTaskRequest(task_id=task_id, after_seq=after_seq)):
            yield convert.event_from_pb(msg)

    async def cancel_task(self, task_id: str, reason: str = "", timeout: float = 10.0) -> bool:
        reply = await self.stub.CancelTask(pb.CancelTaskRequest(task_id=task_id, reason=reason), timeout=timeout)
        return bool(reply.was_running)

    async def list_tasks(self, include_finished: bool = False, timeout: float = 10.0) -> list[TaskSummary]:
        reply = await self.stub.ListTasks(pb.ListTasksRequest(include_finished=include_finished), timeout=timeout)
        return [convert.summary_from_pb(t) for t in reply.tasks]

    async def has_blobs(self, digests: Sequence[str], timeout: float = 10.0) -> set[str]:
        reply = await self.stub.HasBlobs(pb.HasBlobsRequest(sha256=list(digests)), timeout=timeout)
        return set(reply.present)

    async def put_blob(self, path: Path) -> str:
        """Upload a file (skipped when the agent already has it); returns its sha256."""
        digest, size = await asyncio.to_thread(_digest_file, path)
        if digest in await self.has_blobs([digest]):
            return digest

        async def chunks() -> AsyncIterator[pb.BlobChunk]:
            yield pb.BlobChunk(header=pb.BlobHeader(sha256=digest, size=size))
            with path.open("rb") as fh:
                while data := await asyncio.to_thread(fh.read, CHUNK_BYTES):
                    yield pb.BlobChunk(data=data)

        await self.stub.PutBlob(chunks())
        return digest

    async def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()

        async def chunks() -> AsyncIterator[pb.BlobChunk]:
            yield pb.BlobChunk(header=pb.BlobHeader(sha256=digest, size=len(data)))
            for offset in range(0, len(data), CHUNK_BYTES):
                yield pb.BlobChunk(data=data[offset : offset + CHUNK_BYTES])

        await self.stub.PutBlob(chunks())
        return digest

    async def get_blob(self, sha256: str, dest: Path) -> int:
        """Download a blob to `dest`, verifying its sha256; returns its size."""
        hasher = hashlib.sha256()
        size = -1
        tmp = dest.with_name(dest.name + ".part")
        with tmp.open("wb") as fh:
            async for chunk in self.stub.GetBlob(pb.GetBlobRequest(sha256=sha256)):
                if chunk.WhichOneof("part") == "header":
                    size = chunk.header.size
                    continue
                hasher.update(chunk.data)
                await asyncio.to_thread(fh.write, chunk.data)
        if hasher.hexdigest() != sha256:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"blob {sha256} arrived corrupted (sha256 {hasher.hexdigest()})")
        tmp.replace(dest)
        return size


def _digest_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while data := fh.read(CHUNK_BYTES):
            hasher.update(data)
            size += len(data)
    return hasher.hexdigest(), size
