"""The fleet: every agent the controller knows, one entry per node id, and its liveness.

Liveness comes from each agent's telemetry stream (DESIGN decision 7): a stream that
breaks and cannot be re-opened, or max(3 s, 3 x period) of silence, marks it LOST.
mDNS only tells us where agents are, never whether they are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from tensorfleet_agent.core.types import NodeInfo, Telemetry
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.discovery.browse import DiscoveredAgent
from tensorfleet_agent.rpc.client import AgentClient

log = logging.getLogger(__name__)


class AgentState(enum.StrEnum):
    CONNECTING = "CONNECTING"
    ONLINE = "ONLINE"
    LOST = "LOST"
    DRAINING = "DRAINING"


class FleetError(Exception):
    """A fleet request that cannot be honoured (unknown or ambiguous agent, unreachable address)."""


_SOURCE_RANK = {"mdns": 0, "manual": 1, "local": 2}


@dataclass
class AgentRecord:
    node_id: str
    address: str
    source: str  # mdns | manual | local
    name: str = ""
    state: AgentState = AgentState.CONNECTING
    state_since: float = field(default_factory=time.time)
    last_seen: float = 0.0
    info: NodeInfo | None = None
    telemetry: Telemetry | None = None
    error: str = ""
    draining: bool = False  # drained from the controller: no new placements
    placed: set[str] = field(default_factory=set)  # our active attempts on it
    client: AgentClient | None = None
    supervisor: asyncio.Task[None] | None = None
    _silence_deadline: float = 0.0

    @property
    def schedulable(self) -> bool:
        return self.state is AgentState.ONLINE and not self.draining and self.info is not None

    @property
    def slots_total(self) -> int:
        return self.info.slots_total if self.info else 0

    @property
    def slots_free(self) -> int:
        return max(0, self.slots_total - len(self.placed))

    def public_state(self) -> str:
        if self.draining and self.state is AgentState.ONLINE:
            return AgentState.DRAINING.value
        return self.state.value

    def to_dict(self) -> dict[str, Any]:
        """The keys `tensorfleet agents --json` promises."""
        info, tel = self.info, self.telemetry
        return {
            "id": self.node_id,
            "name": self.name,
            "address": self.address,
            "state": self.public_state(),
            "source": self.source,
            "paired": True,
            "slots_total": self.slots_total,
            "slots_free": self.slots_free,
            "gpus": len(info.gpus) if info else 0,
            "labels": dict(info.labels) if info else {},
            "last_seen": self.last_seen,
            "state_since": self.state_since,
            "hostname": info.hostname if info else "",
            "cpu_percent": tel.cpu_percent if tel else 0.0,
            "memory_used_bytes": tel.memory_used_bytes if tel else 0,
            "memory_total_bytes": tel.memory_total_bytes if tel else 0,
            "tasks_running": tel.tasks_running if tel else 0,
            "error": self.error,
            "agent_version": info.agent_version if info else "",
            "workloads": list(info.workloads) if info else [],
        }


FleetListener = Callable[[str, AgentRecord], None]  # (added | lost | back | telemetry | updated | removed, agent)


class Fleet:
    def __init__(self, telemetry_period: float = 1.0, cluster_id: str = "") -> None:
        self.period = telemetry_period
        self.cluster_id = cluster_id
        self.silence_limit = max(3.0, 3 * telemetry_period)
        self.agents: dict[str, AgentRecord] = {}
        self._listeners: list[FleetListener] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def subscribe(self, listener: FleetListener) -> None:
        self._listeners.append(listener)

    def _emit(self, kind: str, record: AgentRecord) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, record)
            except Exception:
                log.exception("fleet listener failed on %s", kind)

    async def start(self) -> None:
        self._watchdog = asyncio.create_task(self._watch_silence())

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for record in list(self.agents.values()):
            await self._stop_supervisor(record)

    # ---- lookups

    def resolve(self, ref: str) -> AgentRecord:
        """An agent by node id, unique id prefix (6+ characters), name or address."""
        if ref in self.agents:
            return self.agents[ref]
        hits = [
            a
            for a in self.agents.values()
            if a.name == ref or a.address == ref or (len(ref) >= 6 and a.node_id.startswith(ref))
        ]
        if not hits:
            raise FleetError(f"no agent {ref!r} (known: {', '.join(self.describe()) or 'none'})")
        if len(hits) > 1:
            raise FleetError(f"{ref!r} matches {len(hits)} agents ({', '.join(a.node_id for a in hits)}); use an id")
        return hits[0]

    def describe(self) -> list[str]:
        return [f"{a.name or '?'} ({a.node_id[:12]})" for a in self.agents.values()]

    # ---- sources

    def on_mdns(self, instance: str, found: DiscoveredAgent | None) -> None:
        if found is None:
            return  # goodbye or expiry: a hint only; the telemetry stream decides liveness
        if found.protocol_version != PROTOCOL_VERSION:
            log.warning(
                "ignoring agent %s at %s: it speaks protocol %d, this controller %d",
                found.name,
                found.address,
                found.protocol_version,
                PROTOCOL_VERSION,
            )
            return
        if found.txt.get("cluster", "") != self.cluster_id:
            log.debug("ignoring agent %s of another cluster", found.name)
            return
        self._adopt(found.node_id, found.address, "mdns", found.name)

    async def add(self, address: str, source: str = "manual") -> AgentRecord:
        """Add an agent by address: asks it for its identity first (FleetError if unreachable)."""
        client = AgentClient(address)
        try:
            info = await client.get_info(timeout=5)
        except grpc.aio.AioRpcError as exc:
            raise FleetError(f"cannot reach an agent at {address}: {exc.code().name}: {exc.details()}") from None
        finally:
            await client.close()
        if info.protocol_version != PROTOCOL_VERSION:
            raise FleetError(
                f"agent at {address} speaks protocol {info.protocol_version}, "
                f"this controller {PROTOCOL_VERSION}; upgrade the older side"
            )
        return self._adopt(info.node_id, address, source, info.name)

    def remember(self, node_id: str, address: str, source: str, name: str) -> AgentRecord:
        """An agent known from an earlier run: supervise it without asking first (it may be down)."""
        return self._adopt(node_id, address, source, name)

    def _adopt(self, node_id: str, address: str, source: str, name: str) -> AgentRecord:
        record = self.agents.get(node_id)
        if record is None:
            record = AgentRecord(node_id, address, source, name)
            self.agents[node_id] = record
            self._start_supervisor(record)
            return record
        if _SOURCE_RANK[source] >= _SOURCE_RANK[record.source]:
            record.source = source
        if address != record.address and (record.state is not AgentState.ONLINE or source == record.source):
            log.info("agent %s moved from %s to %s", record.name, record.address, address)
            record.address = address
            self._restart_supervisor(record)
        elif record.state is AgentState.LOST:
            self._restart_supervisor(record)  # reconnect now instead of at the next backoff
        return record

    async def remove(self, ref: str) -> AgentRecord:
        record = self.resolve(ref)
        del self.agents[record.node_id]
        await self._stop_supervisor(record)
        self._emit("removed", record)
        return record

    def drain(self, ref: str) -> AgentRecord:
        record = self.resolve(ref)
        record.draining = True
        self._emit("updated", record)
        return record

    # ---- supervision

    def _start_supervisor(self, record: AgentRecord) -> None:
        record.client = AgentClient(record.address)
        record.supervisor = asyncio.create_task(self._supervise(record), name=f"agent-{record.node_id[:8]}")

    def _restart_supervisor(self, record: AgentRecord) -> None:
        task = asyncio.create_task(self._restart(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _restart(self, record: AgentRecord) -> None:
        await self._stop_supervisor(record)
        if record.node_id in self.agents:
            self._start_supervisor(record)

    async def _stop_supervisor(self, record: AgentRecord) -> None:
        if record.supervisor is not None:
            record.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await record.supervisor
            record.supervisor = None
        if record.client is not None:
            await record.client.close()
            record.client = None

    async def _supervise(self, record: AgentRecord) -> None:
        backoff = 0.5
        while True:
            client = record.client
            assert client is not None
            try:
                info = await client.get_info(timeout=max(2.0, self.period * 2))
                if info.node_id != record.node_id:
                    raise FleetError(f"the agent at {record.address} is {info.node_id}, not {record.node_id}")
                record.info, record.name, record.error = info, info.name, ""
                record.last_seen = time.time()
                record._silence_deadline = time.monotonic() + self.silence_limit
                self._set_state(record, AgentState.ONLINE)
                backoff = 0.5
                async for sample in client.telemetry(self.period):
                    record.telemetry = sample
                    record.last_seen = time.time()
                    record._silence_deadline = time.monotonic() + self.silence_limit
                    if record.state is AgentState.LOST:  # silence ended
                        self._set_state(record, AgentState.ONLINE)
                    self._emit("telemetry", record)
                raise FleetError("telemetry stream ended")
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, FleetError) as exc:
                text = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                if record.state is AgentState.ONLINE and backoff == 0.5:
                    backoff = 0.0  # one immediate re-open before declaring the agent lost
                else:
                    record.error = text
                    self._set_state(record, AgentState.LOST)
                    backoff = min(5.0, max(0.5, backoff * 2))
            await asyncio.sleep(backoff)

    async def _watch_silence(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for record in list(self.agents.values()):
                if record.state is AgentState.ONLINE and now > record._silence_deadline:
                    record.error = f"no telemetry for {self.silence_limit:g}s"
                    self._set_state(record, AgentState.LOST)

    def _set_state(self, record: AgentRecord, state: AgentState) -> None:
        if record.state is state:
            return
        previous = record.state
        record.state, record.state_since = state, time.time()
        if state is AgentState.LOST:
            log.warning("agent %s (%s) LOST: %s", record.name, record.node_id[:12], record.error)
            self._emit("lost", record)
        elif previous is AgentState.LOST:
            log.info("agent %s (%s) is back", record.name, record.node_id[:12])
            self._emit("back", record)
        else:
            log.info("agent %s (%s) ONLINE at %s", record.name, record.node_id[:12], record.address)
            self._emit("added", record)
