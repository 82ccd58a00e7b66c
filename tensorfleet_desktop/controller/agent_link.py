"""The gRPC side of the core's AgentPort: the fleet's agents and their clients, gRPC errors turned into the
core's own (errors.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from tensorfleet_agent.core.types import TaskEvent, TaskSpec, copied_with
from tensorfleet_agent.rpc.client import AgentClient, EventStream
from tensorfleet_desktop.controller.errors import AgentBusy, AgentCallError, TaskUnknown
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, Fleet
from tensorfleet_desktop.controller.ports import AgentListener, AgentView, GpuView

#: The agent could not take the call now; anything else is its answer to this call.
_BUSY = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@contextlib.contextmanager
def _core_errors() -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or exc.code().name
        if code in _BUSY:  # RESOURCE_EXHAUSTED is the agent's own "no"; the others leave it open
            raise AgentBusy(details, maybe_done=code != grpc.StatusCode.RESOURCE_EXHAUSTED) from None
        if code == grpc.StatusCode.NOT_FOUND:
            raise TaskUnknown(details) from None
        raise AgentCallError(details) from None


class _Heard(EventStream):
    """A task's events (the stream made when first read), each noting the agent heard from; agent errors as the
    core's. Not an async generator: the controller stops reading at the task's end, and an async generator left so
    is finalized by the event loop in a task of its own (client.TaskEvents says more)."""

    def __init__(self, fleet: Fleet, node_id: str, stream: Callable[[], AsyncIterator[TaskEvent]]) -> None:
        self._fleet = fleet
        self._node_id = node_id
        self._make: Callable[[], AsyncIterator[TaskEvent]] | None = stream
        self._events: AsyncIterator[TaskEvent] | None = None
        self._done = False

    async def __anext__(self) -> TaskEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            with _core_errors():
                if self._events is None:
                    assert self._make is not None
                    self._events, self._make = self._make(), None
                event = await anext(self._events)
        except BaseException:  # its end, an error, or its reader cancelled: the stream is over
            await self.aclose()
            raise
        self._fleet.heard_from(self._node_id)
        return event

    async def aclose(self) -> None:
        self._done, self._make = True, None
        events, self._events = self._events, None
        close = getattr(events, "aclose", None)
        if close is not None:
            with _core_errors():
                await close()


def view(record: AgentRecord) -> AgentView:
    info, tel = record.info, record.telemetry
    return AgentView(
        node_id=record.node_id,
        name=record.name,
        address=record.address,
        connected=record.client is not None,
        online=record.client is not None and record.state is AgentState.ONLINE,
        schedulable=record.schedulable,
        slots_free=record.slots_free,
        slots_total=record.slots_total,
        reported_slots_free=tel.slots_free if tel else None,
        gpu_slots=len(info.gpus) if info else 0,
        gpu_free_memory=sum(g.memory_total_bytes - g.memory_used_bytes for g in tel.gpus) if tel else 0,
        load=tel.cpu_percent if tel else 0.0,
        labels=dict(info.labels) if info else {},
        workloads=frozenset(info.workloads) if info else frozenset(),
        sklearn_version=info.sklearn_version if info else "",
        placed=frozenset(record.placed),
        fingerprint=record.fingerprint,
        gpus=gpu_views(record),
    )


def gpu_views(record: AgentRecord) -> tuple[GpuView, ...]:
    """Its GPUs from GetInfo, with the last telemetry's readings where one came (before: empty and free)."""
    if record.info is None:
        return ()
    sampled = {g.index: g for g in record.telemetry.gpus} if record.telemetry is not None else {}
    out = []
    for gpu in record.info.gpus:
        tel = sampled.get(gpu.index)
        if tel is None:
            out.append(GpuView(gpu.index, gpu.memory_total_bytes))
        else:
            total = tel.memory_total_bytes or gpu.memory_total_bytes
            out.append(
                GpuView(
                    gpu.index, total, tel.memory_used_bytes, tel.memory_reserved_bytes, tel.shared_tasks, tel.exclusive
                )
            )
    return tuple(out)


class _Made:
    """A view and what it was made from. Its info and telemetry are compared by identity (each GetInfo answer and
    telemetry sample is a new object, never changed in place), and held, so an identity is never reused."""

    __slots__ = (
        "address",
        "client",
        "draining",
        "fingerprint",
        "info",
        "name",
        "paired",
        "record",
        "state",
        "tel",
        "view",
    )

    def __init__(self, record: AgentRecord, made: AgentView) -> None:
        self.record, self.view = record, made
        self.state, self.client, self.paired, self.draining = (
            record.state,
            record.client,
            record.paired,
            record.draining,
        )
        self.info, self.tel = record.info, record.telemetry
        self.name, self.address, self.fingerprint = record.name, record.address, record.fingerprint

    def fits(self, r: AgentRecord) -> bool:
        """Whether the view still shows the agent as it is, but for the attempts held there and so its free slots
        (they change with every task: a new view then only copies the old one's other fields)."""
        return (
            self.record is r
            and self.tel is r.telemetry
            and self.state is r.state
            and self.client is r.client
            and self.info is r.info
            and self.paired == r.paired
            and self.draining == r.draining
            and self.name == r.name
            and self.address == r.address
            and self.fingerprint == r.fingerprint
        )


class FleetAgents:
    """AgentPort over the fleet: one AgentClient per connected agent."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        # node id -> its view and what it was made from: a view is made again only when its agent changed (a
        # scheduling pass over 200 agents rebuilt 200 views: 13% of a draining queue's controller time)
        self._views: dict[str, _Made] = {}

    def _view(self, record: AgentRecord) -> AgentView:
        made = self._views.get(record.node_id)
        if made is not None and made.fits(record):
            if made.view.placed != record.placed:
                # copied_with: dataclasses.replace cost as much as making the view anew (~20 us, twice per task)
                made.view = copied_with(made.view, placed=frozenset(record.placed), slots_free=record.slots_free)
            return made.view
        self._views[record.node_id] = made = _Made(record, view(record))
        return made.view

    def agents(self) -> list[AgentView]:
        records = self.fleet.agents
        if len(self._views) > len(records):  # forget removed agents
            for node_id in self._views.keys() - records.keys():
                del self._views[node_id]
        return [self._view(r) for r in records.values()]

    def agent(self, node_id: str) -> AgentView | None:
        record = self.fleet.agents.get(node_id)
        return self._view(record) if record is not None else None

    def subscribe(self, listener: AgentListener) -> None:
        self.fleet.subscribe(lambda kind, record: listener(kind, record.node_id))

    def hold(self, node_id: str, attempt: str) -> None:
        record = self.fleet.agents.get(node_id)
        if record is not None:
            record.placed.add(attempt)

    def release(self, node_id: str, attempt: str) -> None:
        record = self.fleet.agents.get(node_id)
        if record is not None:
            record.placed.discard(attempt)

    def _client(self, node_id: str) -> AgentClient:
        record = self.fleet.agents.get(node_id)
        if record is None or record.client is None:
            raise AgentBusy("agent has no connection")
        return record.client

    async def run_and_watch(
        self, node_id: str, spec: TaskSpec
    ) -> tuple[tuple[int, int] | None, AsyncGenerator[TaskEvent, None]]:
        with _core_errors():
            accepted, events = await self._client(node_id).run_and_watch(spec, timeout=15)
        self.fleet.heard_from(node_id)
        return accepted.shared_gpu, _Heard(self.fleet, node_id, lambda: events)

    def watch_task(self, node_id: str, attempt: str, after_seq: int) -> AsyncGenerator[TaskEvent, None]:
        return _Heard(self.fleet, node_id, lambda: self._client(node_id).watch_task(attempt, after_seq=after_seq))

    async def cancel_task(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float = 0.0) -> None:
        with _core_errors():
            await self._client(node_id).cancel_task(attempt, reason, timeout=10, checkpoint_grace=checkpoint_grace)

    async def preempt(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float) -> None:
        with _core_errors():
            await self._client(node_id).cancel_task(
                attempt, reason, timeout=10, checkpoint_grace=checkpoint_grace, preempt=True
            )

    async def list_tasks(self, node_id: str) -> list[tuple[str, str]]:
        with _core_errors():
            return [(t.task_id, t.job_id) for t in await self._client(node_id).list_tasks(timeout=5)]

    async def has_blobs(self, node_id: str, digests: Sequence[str]) -> set[str]:
        with _core_errors():
            return await self._client(node_id).has_blobs(digests)

    async def put_blob(self, node_id: str, path: Path, sha256: str) -> None:
        with _core_errors():
            await self._client(node_id).put_blob(path, sha256, lambda: self.fleet.heard_from(node_id))

    async def put_bytes(self, node_id: str, data: bytes) -> str:
        with _core_errors():
            return await self._client(node_id).put_bytes(data)

    async def fetch_blob(self, node_id: str, sha256: str, size: int, url: str) -> None:
        with _core_errors():
            await self._client(node_id).fetch_blob(sha256, size, url)

    async def push_blob(self, node_id: str, sha256: str, url: str) -> None:
        with _core_errors():
            await self._client(node_id).push_blob(sha256, url)

    async def get_blob(self, node_id: str, sha256: str, dest: Path) -> None:
        with _core_errors():
            await self._client(node_id).get_blob(sha256, dest)

    # ---- not the core's: what the service asks of one agent for a user

    async def list_envs(self, node_id: str) -> dict[str, Any]:
        """The agent's cached project envs (AgentClient.list_envs)."""
        with _core_errors():
            return await self._client(node_id).list_envs()

    async def list_cache(self, node_id: str) -> dict[str, Any]:
        """The agent's blob cache and dataset trees (AgentClient.list_cache)."""
        with _core_errors():
            return await self._client(node_id).list_cache()

    async def prune_envs(self, node_id: str, keep_bytes: int) -> dict[str, Any]:
        with _core_errors():
            return await self._client(node_id).prune_envs(keep_bytes)
