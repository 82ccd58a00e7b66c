"""The fleet: every agent the controller knows, one entry per node id, and its liveness.

Liveness comes from each agent's telemetry stream (docs/architecture.md, "Processes and who dials whom"): a stream that
breaks and cannot be re-opened, or max(3 s, 3 x period) of silence, marks it LOST, or SLEEPING when its last telemetry
said it was about to suspend its machine (--suspend-when-idle). A sleeping agent is woken by a Wake-on-LAN magic
packet (`Fleet.wake`: WAKING until it answers, or SLEEPING again after `wake_timeout`); the sleeping ones are kept in
a small JSON file so a restarted controller still knows them (and can wake them). OWNER_ACTIVE is an online agent
whose desk owner uses the machine (desk mode): connected, given no work.
mDNS only tells us where agents are, never whether they are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from tensorfleet_agent.core.types import DeskStatus, GpuInfo, NetInterface, NodeInfo, Telemetry
from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.discovery.browse import DiscoveredAgent, clean_text
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE
from tensorfleet_agent.identity import Identity, node_id_of_cert
from tensorfleet_agent.rpc.client import AgentClient, AgentTrust, PairingError, fetch_certificate
from tensorfleet_agent.runtime.wake_on_lan import Subnet, check_broadcast, local_subnets, parse_mac, send_magic_packet
from tensorfleet_agent.security.secrets import cluster_id_of
from tensorfleet_desktop.controller.ports import MIN_FREE_DISK_BYTES
from tensorfleet_desktop.controller.scheduler import Capacity
from tensorfleet_desktop.controller.waking import Sleeper

log = logging.getLogger(__name__)


#: A lost agent is re-dialled at least this often: a restarted agent is back within about this long, since
#: mDNS says nothing when it re-announces the same records. One refused connection per period is cheap.
_MAX_BACKOFF = 2.0
#: The silence watchdog's wake-up may be this late before the loop counts as stalled (see _watch_silence).
_STALL_SLACK = 0.3
#: At most this many refused services are remembered (anyone on the LAN can advertise): the oldest go first.
MAX_REFUSED = 256
#: A woken agent that has not answered after this long is SLEEPING again (`serve --wake-timeout`).
DEFAULT_WAKE_TIMEOUT = 120.0
#: Not connected, and not to be counted lost: sleeping machines, and those a magic packet was sent to.
ASLEEP = frozenset({"SLEEPING", "WAKING"})


class AgentState(enum.StrEnum):
    CONNECTING = "CONNECTING"
    ONLINE = "ONLINE"
    LOST = "LOST"
    DRAINING = "DRAINING"
    OWNER_ACTIVE = "OWNER_ACTIVE"  # desk mode: its owner uses the machine; it gets no work
    SLEEPING = "SLEEPING"  # it said it suspends its machine, then went quiet: a magic packet can wake it
    WAKING = "WAKING"  # a magic packet was sent; waiting for it to answer


class FleetError(Exception):
    """A fleet request that cannot be honoured (unknown or ambiguous agent, unreachable address)."""


class AgentNotFound(FleetError):
    """No agent answers to that id, id prefix, name or address."""


def unreachable(address: str, exc: BaseException) -> str:
    """A failed TCP or TLS dial as a sentence that says what to check (never a raw SSL error)."""
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)  # OpenSSL's code, e.g. WRONG_VERSION_NUMBER
        why = reason.lower().replace("_", " ") if reason else str(exc.args[-1] if exc.args else exc)
        return (
            f"{address} does not complete a TLS handshake as an agent does ({why}): is it an agent "
            "started with --insecure, or another service on that port?"
        )
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing listens on {address} (connection refused): is the agent running?"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{address} did not answer in time: is the host up, and does no firewall drop the port?"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host of {address} ({exc.strerror})"
    if isinstance(exc, OSError):
        return f"cannot reach {address}: {exc.strerror or exc}"
    return f"cannot reach {address}: {exc}"


def changed_certificate(name: str, fingerprint: str, pinned: str) -> str:
    return (
        f"agent {name} presents certificate {fingerprint[:16]}, pinned is {pinned[:16]}: refused; re-pair with "
        f"--force if it was reinstalled (tensorfleet agents pair {name} --token TOKEN --force)"
    )


@dataclass
class RefusedService:
    """A service this controller saw and does not use, with the reason (`tensorfleet agents --all`)."""

    key: str  # the mDNS instance name as received (the key in Fleet.refused)
    instance: str  # the same, sanitized for display
    name: str
    node_id: str  # as advertised: unverified
    address: str
    reason: str
    cluster_id: str = ""
    first_seen: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "id": self.node_id,
            "name": self.name,
            "address": self.address,
            "reason": self.reason,
            "cluster_id": self.cluster_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


_SOURCE_RANK = {"mdns": 0, "manual": 1, "pool": 2, "local": 3}


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
    paired: bool = False
    fingerprint: str = ""  # of the certificate this controller pinned (trust on first use, at pairing)
    warning: str = ""  # sticky security warnings (impersonation, changed certificate)
    refused: str = ""  # why this controller refuses the agent now (its certificate does not prove it)
    pair_token: str = ""  # a join token to pair with on first contact (the local agent)
    pool: str = ""  # a pool agent's pool, from its join credential: its pool label, whatever the agent reports
    wake_count: int = 0  # magic packets this controller sent it that woke it
    last_wake_at: float = 0.0  # unix seconds of the last magic packet sent; 0: never
    wake_route: str = ""  # how that packet went ("sent by the controller on eth0", "relayed by agent X")
    _silence_deadline: float = 0.0
    _wake_deadline: float = 0.0  # monotonic: WAKING until then

    @property
    def desk(self) -> DeskStatus | None:
        """Desk mode's state: the latest telemetry's, else what GetInfo said; None when not in desk mode."""
        if self.telemetry is not None and self.telemetry.desk is not None:
            return self.telemetry.desk
        return self.info.desk if self.info is not None else None

    @property
    def owner_active(self) -> bool:
        """Desk mode: its owner uses the machine (or paused lending): it gets no work."""
        desk = self.desk
        return desk is not None and not desk.lending

    @property
    def going_to_sleep(self) -> bool:
        return self.telemetry is not None and self.telemetry.going_to_sleep

    @property
    def asleep(self) -> bool:
        return self.state.value in ASLEEP

    @property
    def interfaces(self) -> tuple[NetInterface, ...]:
        return self.info.interfaces if self.info is not None else ()

    @property
    def stopping(self) -> bool:
        """The agent drains itself (SIGTERM): it refuses new tasks while its running ones finish."""
        return self.telemetry is not None and self.telemetry.draining

    @property
    def disk_full(self) -> bool:
        return self.telemetry is not None and self.telemetry.disk_free_bytes < MIN_FREE_DISK_BYTES

    @property
    def schedulable(self) -> bool:
        return (
            self.state is AgentState.ONLINE
            and self.paired
            and not self.draining
            and not self.stopping
            and not self.disk_full
            and not self.owner_active
            and self.info is not None
        )

    @property
    def slots_total(self) -> int:
        return self.info.slots_total if self.info else 0

    @property
    def slots_free(self) -> int:
        return max(0, self.slots_total - len(self.placed))

    def public_state(self) -> str:
        if self.refused and self.state is not AgentState.ONLINE:
            return "REFUSED"
        if (self.draining or self.stopping) and self.state is AgentState.ONLINE:
            return AgentState.DRAINING.value
        if self.owner_active and self.state is AgentState.ONLINE:
            return AgentState.OWNER_ACTIVE.value
        return self.state.value

    def _desk_text(self) -> str:
        desk = self.desk
        if desk is None or desk.lending or self.state is not AgentState.ONLINE:
            return ""
        why = "paused by its owner" if desk.paused else "its owner is using it"
        return f"{why}: {desk.reason}" if desk.reason else why

    def _disk_warning(self) -> str:
        if not self.disk_full or self.telemetry is None:
            return ""
        free = self.telemetry.disk_free_bytes / 2**20
        need = MIN_FREE_DISK_BYTES >> 20
        return f"disk full: {free:.0f} MiB free in its data dir; no new tasks until {need} MiB are free"

    def to_dict(self) -> dict[str, Any]:
        """The keys `tensorfleet agents --json` promises."""
        info, tel = self.info, self.telemetry
        return {
            "id": self.node_id,
            "name": self.name,
            "address": self.address,
            "state": self.public_state(),
            "source": self.source,
            "paired": self.paired,
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
            "error": "; ".join(
                x for x in (self.refused, self.warning, self._desk_text(), self.error, self._disk_warning()) if x
            ),
            "agent_version": info.agent_version if info else "",
            "workloads": list(info.workloads) if info else [],
            "fingerprint": self.fingerprint or (info.cert_fingerprint if info else ""),
            "cluster_id": info.cluster_id if info else "",
            "disk_free_bytes": tel.disk_free_bytes if tel else (info.disk_free_bytes if info else 0),
            "disk_total_bytes": tel.disk_total_bytes if tel else 0,
            "gpu_stats": [asdict(g) for g in tel.gpus] if tel else [],
            "running": sorted(self.placed),
            "desk": asdict(self.desk) if self.desk is not None else None,
            "interfaces": [asdict(i) for i in self.interfaces],
            "wake_count": self.wake_count,
            "last_wake_at": self.last_wake_at,
            "pool": info.pool if info else "",  # a pool agent's (issue 25): its pool and Slurm allocation
            "allocation_id": info.allocation_id if info else "",
        }


def broadcast_of(interface: NetInterface) -> str:
    """Its subnet's broadcast address, from its address and prefix where known (what its machine reports as
    `broadcast` can be unset, or its own address, on an interface configured without `brd`)."""
    if interface.ipv4 and 0 < interface.prefix_length < 31:
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(f"{interface.ipv4}/{interface.prefix_length}", strict=False)
            return str(net.broadcast_address)
    return interface.broadcast


_POOL_LABEL = "pool"  # jobspec.POOL_LABEL (not imported: jobspec pulls in the workloads)


def pool_bound(record: AgentRecord, info: NodeInfo) -> NodeInfo:
    """A pool agent's info with the pool of its join credential as its pool label and NodeInfo.pool: a holder of a
    credential for pool A cannot serve jobs pinned to pool B by labelling itself so."""
    if not record.pool or (info.pool == record.pool and info.labels.get(_POOL_LABEL) == record.pool):
        return info
    if info.labels.get(_POOL_LABEL, record.pool) != record.pool or info.pool not in ("", record.pool):
        log.warning(
            "agent %s says it serves pool %s; its join credential is for pool %s: that is its pool",
            record.name or record.node_id[:12], info.labels.get(_POOL_LABEL) or info.pool, record.pool,
        )  # fmt: skip
    return dataclasses.replace(info, labels={**info.labels, _POOL_LABEL: record.pool}, pool=record.pool)


def _node_info_from_dict(d: dict[str, Any]) -> NodeInfo:
    """NodeInfo from `asdict(info)` (the sleeping agents' file): unknown keys dropped, nested values rebuilt."""
    known = {f.name for f in dataclasses.fields(NodeInfo)}
    body = {k: v for k, v in d.items() if k in known}
    body["gpus"] = tuple(GpuInfo(**g) for g in body.get("gpus", ()))
    body["workloads"] = tuple(body.get("workloads", ()))
    body["interfaces"] = tuple(NetInterface(**i) for i in body.get("interfaces", ()))
    body["labels"] = dict(body.get("labels", {}))
    desk = body.get("desk")
    body["desk"] = DeskStatus(**desk) if isinstance(desk, dict) else None
    return NodeInfo(**body)


def _write_json(path: Path, body: dict[str, Any]) -> None:
    """Written whole: a reader (the next start) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _handshake_failed(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and "handshake" in str(exc.details()).lower()


def _rpc_text(address: str, exc: BaseException) -> str:
    """What went wrong talking to an agent, as a sentence (gRPC's TLS details are not one)."""
    if isinstance(exc, OSError):
        return unreachable(address, exc)
    if _handshake_failed(exc):
        return f"the TLS handshake with {address} failed (its certificate changed, or it no longer speaks TLS)"
    if isinstance(exc, grpc.aio.AioRpcError) and "connection refused" in str(exc.details()).lower():
        return unreachable(address, ConnectionRefusedError())
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


FleetListener = Callable[[str, AgentRecord], None]  # (added | lost | back | telemetry | updated | removed, agent)


class Impersonation(FleetError):
    """A host presented a certificate that does not belong to the node it claims to be."""


class Fleet:
    def __init__(
        self,
        telemetry_period: float = 1.0,
        identity: Identity | None = None,
        cluster_token: str = "",
        pins: dict[str, str] | None = None,
        persist: Callable[[AgentRecord], None] | None = None,
        sleepers: Path | None = None,
        wake_timeout: float = DEFAULT_WAKE_TIMEOUT,
    ) -> None:
        self.period = telemetry_period
        self.sleepers_file = sleepers  # the JSON file of the sleeping agents (None: not kept across restarts)
        self.wake_timeout = wake_timeout
        self._sleepers_saved: dict[str, Any] = {}
        self._sleepers_writer: asyncio.Task[None] | None = None
        self.identity = identity  # None: --insecure, plaintext and no pairing
        self.cluster_token = cluster_token
        self.cluster_id = cluster_id_of(cluster_token) if cluster_token else ""
        self.pins = dict(pins or {})
        self._persist = persist
        self.silence_limit = max(3.0, 3 * telemetry_period)
        self.agents: dict[str, AgentRecord] = {}
        self.refused: dict[str, RefusedService] = {}
        self._listeners: list[FleetListener] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    def subscribe(self, listener: FleetListener) -> Callable[[], None]:
        """Call `listener` on every change of an agent; returns the call that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

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
        if self._sleepers_writer is not None:
            await self._sleepers_writer  # the last change reaches the file

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
            raise AgentNotFound(f"no agent {ref!r} (known: {', '.join(self.describe()) or 'none'})")
        if len(hits) > 1:
            raise FleetError(f"{ref!r} matches {len(hits)} agents ({', '.join(a.node_id for a in hits)}); use an id")
        return hits[0]

    def describe(self) -> list[str]:
        return [f"{a.name or '?'} ({a.node_id[:12]})" for a in self.agents.values()]

    # ---- sources

    def on_mdns(self, instance: str, found: DiscoveredAgent | None) -> None:
        if found is None:
            self.refused.pop(instance, None)
            return  # goodbye or expiry: a hint only; the telemetry stream decides liveness
        reason = self._mdns_refusal(found)
        if reason:
            if found.node_id in self.agents:
                self.refused.pop(instance, None)  # added by hand (another cluster's agent): nothing to report
            else:
                self.refuse(instance, found, reason)
            return
        self.refused.pop(instance, None)
        self._adopt(found.node_id, found.address, "mdns", found.name, instance=instance)

    def _mdns_refusal(self, found: DiscoveredAgent) -> str:
        """Why an advertised service is not used ('' when it is)."""
        if found.problem:
            return f"unusable mDNS record ({found.problem})"
        if found.protocol_version != PROTOCOL_VERSION:
            return (
                f"it speaks protocol {found.protocol_version}, this controller {PROTOCOL_VERSION}: "
                "upgrade the older side"
            )
        cluster = found.txt.get("cluster", "")
        if cluster == self.cluster_id:
            return ""
        if not cluster:
            return (
                "it has no cluster token, this controller has: add it with `tensorfleet agents add ADDRESS` "
                "and pair it, or start it with the same TENSORFLEET_CLUSTER_TOKEN"
            )
        if not self.cluster_id:
            return f"it belongs to cluster {cluster[:16]}; this controller has no cluster token"
        return (
            f"it belongs to another cluster ({cluster[:16]}; this controller is {self.cluster_id[:16]}): "
            "its TENSORFLEET_CLUSTER_TOKEN differs"
        )

    def refuse(self, key: str, found: DiscoveredAgent, reason: str) -> RefusedService:
        """Remember a refused service; a new refusal (or a new reason) is logged once, repeats are not."""
        entry = self.refused.get(key)
        if entry is not None and entry.reason == reason:
            entry.last_seen = time.time()
            entry.address, entry.name = found.address, found.name
            return entry
        if entry is None and len(self.refused) >= MAX_REFUSED:
            del self.refused[min(self.refused.values(), key=lambda e: e.last_seen).key]
        entry = RefusedService(
            key,
            found.instance or clean_text(key, 128),
            found.name,
            found.node_id,
            found.address,
            reason,
            found.txt.get("cluster", ""),
        )
        self.refused[key] = entry
        log.warning(
            "refusing the agent service %s (%s) at %s: %s",
            found.name or "?",
            entry.instance.removesuffix("." + SERVICE_TYPE),
            found.address,
            reason,
        )
        return entry

    def remember(self, node_id: str, address: str, source: str, name: str) -> AgentRecord:
        """An agent known from an earlier run: supervise it without asking first (it may be down)."""
        return self._adopt(node_id, address, source, name)

    def persist(self, record: AgentRecord) -> None:
        """Remember the agent across restarts, with its pin: a re-add never stores it without one."""
        record.fingerprint = record.fingerprint or self.pins.get(record.node_id, "")
        if self._persist is not None:
            self._persist(record)

    async def add(self, address: str, source: str = "manual", pair_token: str = "", pool: str = "") -> AgentRecord:
        """Add an agent by address; its certificate must prove the node id it reports. `pool`: the pool its join
        credential names, which is its pool label from now on (pool_bound)."""
        try:
            cert = b"" if self.identity is None else await fetch_certificate(address, timeout=5)
        except (OSError, ssl.SSLError) as exc:
            raise FleetError(unreachable(address, exc)) from None
        client = AgentClient(address, None if self.identity is None else AgentTrust(cert, self.identity))
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
        fingerprint = ""
        if cert:
            node_id, fingerprint = node_id_of_cert(cert)
            if node_id != info.node_id:
                raise Impersonation(
                    f"the agent at {address} claims node {info.node_id}; its certificate says otherwise"
                )
            pinned = self.pins.get(node_id)
            if pinned and pinned != fingerprint:
                raise Impersonation(changed_certificate(clean_text(info.name) or node_id[:12], fingerprint, pinned))
        known = info.node_id in self.agents
        existing = self.agents.get(info.node_id)
        if source == "pool" and existing is not None and existing.source != "pool":
            raise FleetError(  # a join credential never takes over an agent added otherwise (members.join)
                f"agent {existing.name or info.node_id[:12]} is already in this fleet as a {existing.source} agent; "
                "it cannot join as a pool agent"
            )
        record = self._adopt(info.node_id, address, source, clean_text(info.name), verified=True)
        if pool:
            record.pool = pool
            if record.info is not None:
                record.info = pool_bound(record, record.info)
        if fingerprint:  # verified: the certificate proves the node id; pin it (trust on first use)
            record.fingerprint = self.pins.setdefault(record.node_id, fingerprint)
        self.persist(record)
        if pair_token:
            record.pair_token = pair_token
        if pair_token or known:
            self._restart_supervisor(record)
        return record

    def _adopt(
        self, node_id: str, address: str, source: str, name: str, verified: bool = False, instance: str = ""
    ) -> AgentRecord:
        record = self.agents.get(node_id)
        if record is None:
            record = AgentRecord(node_id, address, source, name, fingerprint=self.pins.get(node_id, ""))
            self.agents[node_id] = record
            for key in [k for k, e in self.refused.items() if e.node_id == node_id]:
                del self.refused[key]  # added by hand after all (e.g. another cluster's agent)
            self._start_supervisor(record)
            return record
        if _SOURCE_RANK[source] >= _SOURCE_RANK[record.source]:
            record.source = source
        if address != record.address:
            if verified or self.identity is None:
                self._move(record, address)
            else:
                self._spawn(self._verify_move(record, address, instance))
        elif record.state is AgentState.LOST or record.asleep:
            self._restart_supervisor(record)  # reconnect now instead of at the next backoff (woken: re-announced)
        return record

    def _move(self, record: AgentRecord, address: str) -> None:
        log.info("agent %s is now at %s (was %s)", record.name, address, record.address)
        record.address = address
        self._restart_supervisor(record)

    async def _verify_move(self, record: AgentRecord, address: str, instance: str = "") -> None:
        """Another address claims a known node: believe it only if its certificate proves the node id."""
        host, _, port = address.rpartition(":")
        claim = DiscoveredAgent(instance, record.node_id, record.name, (host,), int(port), PROTOCOL_VERSION)
        try:
            cert = await fetch_certificate(address, timeout=5)
            node_id, _fp = node_id_of_cert(cert)
        except (OSError, ssl.SSLError, ValueError) as exc:
            text = unreachable(address, exc) if isinstance(exc, OSError) else f"{address}: {exc}"
            if instance:
                self.refuse(instance, claim, f"it claims to be agent {record.name} but {text}")
            return
        if node_id == record.node_id:
            self.refused.pop(instance, None)
            if record.state is not AgentState.ONLINE:
                self._move(record, address)
            return
        warning = (
            f"impersonation refused: {address} claims to be this agent (node {record.node_id[:12]}) "
            f"but presents a certificate for node {node_id[:12]}"
        )
        if instance:
            self.refuse(instance, claim, warning)
        if warning != record.warning:  # every re-announcement lands here: report it once
            record.warning = warning
            log.warning("agent %s: %s", record.name, record.warning)
            self._emit("updated", record)

    async def remove(self, ref: str) -> AgentRecord:
        record = self.resolve(ref)
        del self.agents[record.node_id]
        self.pins.pop(record.node_id, None)
        await self._stop_supervisor(record)
        self._emit("removed", record)
        self._save_sleepers()
        return record

    def drain(self, ref: str) -> AgentRecord:
        record = self.resolve(ref)
        record.draining = True
        self._emit("updated", record)
        return record

    async def pair(self, ref: str, token: str, force: bool = False) -> AgentRecord:
        """Pair with an agent using its join token; `force` accepts a changed certificate deliberately."""
        record = self.resolve(ref)
        if self.identity is None:
            raise FleetError("this controller runs with --insecure: there is no pairing")
        if force:
            self.pins.pop(record.node_id, None)
            record.warning = record.refused = record.fingerprint = ""
        await self._stop_supervisor(record)
        try:
            client = await self._connect(record)
        except (OSError, ssl.SSLError) as exc:
            self._start_supervisor(record)
            raise FleetError(f"agent {record.name}: {unreachable(record.address, exc)}") from None
        except Impersonation:
            self._start_supervisor(record)
            raise
        try:
            await client.pair(token)
            await client.authenticate()
        except PairingError as exc:
            raise FleetError(f"pairing with {record.name} failed: {exc}") from None
        except grpc.aio.AioRpcError as exc:
            raise FleetError(f"pairing with {record.name} failed: {exc.code().name}: {exc.details()}") from None
        finally:
            await client.close()
            if record.supervisor is None:
                self._start_supervisor(record)
        self._trust(record, client)
        return record

    # ---- Wake-on-LAN

    async def wake(self, ref: str, *, wol_only: bool = False) -> AgentRecord:
        """Send the agent's machine a magic packet on each of its subnets: by this controller where it has an
        address there, else relayed by an online agent on that subnet. WAKING until it answers, SLEEPING again
        after wake_timeout. `wol_only`: only on interfaces that report Wake-on-LAN on (waking on demand); by
        hand, interfaces whose WoL is unknown are tried too when none reports it on."""
        record = self.resolve(ref)
        name = record.name or record.node_id[:12]
        if record.state is AgentState.ONLINE:
            raise FleetError(f"agent {name} is {record.public_state()}: it is awake")
        targets = [dataclasses.replace(i, broadcast=b) for i in record.interfaces if i.mac and (b := broadcast_of(i))]
        if not targets:
            raise FleetError(
                f"agent {name} reported no network interface with a MAC address and an IPv4 subnet: "
                "it cannot be woken (is it an older agent?)"
            )
        enabled = [i for i in targets if i.wake_on_lan]
        if enabled or wol_only:
            targets = enabled
        if not targets:
            raise FleetError(
                f"agent {name} reports no interface with Wake-on-LAN on (check `ethtool IFACE` on it, "
                "or start it with --wol IFACE if the NIC wakes)"
            )
        own = await asyncio.to_thread(local_subnets)
        routes, problems = [], []
        for target in targets:
            try:
                parse_mac(target.mac)
                routes.append(await self._send_wake(target, own, record))
            except (FleetError, ValueError, OSError) as exc:
                problems.append(f"{target.name} ({target.mac}): {exc}")
        if not routes:
            text = f"agent {name}: no magic packet could be sent: {'; '.join(problems)}"
            record.error = text
            self._emit("updated", record)
            raise FleetError(text)
        record.last_wake_at = time.time()
        record.wake_route = "; ".join(routes)
        record.error = ""
        record._wake_deadline = time.monotonic() + self.wake_timeout
        log.info("agent %s (%s): magic packet %s", name, record.node_id[:12], record.wake_route)
        if record.state is AgentState.WAKING:
            self._emit("updated", record)
        self._set_state(record, AgentState.WAKING)
        self._save_sleepers()
        return record

    def sleepers(self) -> list[Sleeper]:
        """The sleeping and waking agents with what they could run (waking.SleeperPort)."""
        out = []
        for r in self.agents.values():
            if not r.asleep or r.info is None or r.refused:
                continue
            info = r.info
            capacity = Capacity(
                node_id=r.node_id,
                name=r.name,
                free_slots=info.slots_total,
                free_gpu_slots=len(info.gpus),
                gpu_free_memory=sum(g.memory_total_bytes for g in info.gpus),
                labels=dict(info.labels),
                workloads=frozenset(info.workloads),
            )
            wakeable = any(i.wake_on_lan and i.mac and broadcast_of(i) for i in r.interfaces)
            waking = r.state is AgentState.WAKING
            out.append(Sleeper(r.node_id, r.name, waking, capacity, wakeable, r.last_wake_at, r.error))
        return out

    def wake_soon(self, node_id: str) -> None:
        """Wake it in the background (waking on demand); a failure is logged and shown on the agent."""

        async def wake() -> None:
            try:
                await self.wake(node_id, wol_only=True)
            except FleetError as exc:
                log.warning("waking on demand: %s", exc)

        self._spawn(wake())

    async def _send_wake(self, target: NetInterface, own: list[Subnet], record: AgentRecord) -> str:
        """One magic packet for `target` on its subnet; says how it went."""
        with contextlib.suppress(ValueError):
            subnet = check_broadcast(target.broadcast, own)
            await asyncio.to_thread(send_magic_packet, target.mac, subnet)
            return f"for {target.mac} sent by the controller to {target.broadcast} on {subnet.interface}"
        relays = [
            r
            for r in self.agents.values()
            if r is not record
            and r.state is AgentState.ONLINE
            and r.paired
            and r.client is not None
            and any(broadcast_of(i) == target.broadcast for i in r.interfaces)
        ]
        if not relays:
            raise FleetError(
                f"this controller has no address on the subnet of {target.broadcast} and no online agent is on it"
            )
        failures = []
        for relay in relays:
            assert relay.client is not None
            try:
                via = await relay.client.send_wake_packet(target.mac, target.broadcast)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"agent {relay.name}: {exc.details() or exc.code().name}")
                continue
            return f"for {target.mac} relayed by agent {relay.name} to {target.broadcast} on {via}"
        raise FleetError("relaying failed: " + "; ".join(failures))

    def restore_sleepers(self) -> int:
        """Known sleeping agents from the file of an earlier run: SLEEPING, supervised (they answer when woken).
        Blocking (a small file): call before the loop serves, or through a thread."""
        if self.sleepers_file is None or not self.sleepers_file.exists():
            return 0
        try:
            body = json.loads(self.sleepers_file.read_text())
            entries = body["sleeping"]
            wakes = body.get("wakes", {})
            if not isinstance(entries, dict) or not isinstance(wakes, dict):
                raise TypeError("'sleeping' and 'wakes' must be objects")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self.sleepers_file, exc)
            return 0
        wakes = {node_id: w for node_id, value in wakes.items() if (w := self._wake_entry(node_id, value))}
        restored = 0
        for node_id, entry in entries.items():
            if node_id in self.agents:
                continue
            try:
                if not isinstance(entry, dict):
                    raise TypeError(f"an object was expected, not {type(entry).__name__}")
                info = _node_info_from_dict(entry["info"])
                record = AgentRecord(
                    node_id,
                    str(entry["address"]),
                    str(entry.get("source", "mdns")),
                    clean_text(str(entry.get("name", ""))),
                    state=AgentState.SLEEPING,
                    state_since=float(entry.get("since", time.time())),
                    info=info,
                    fingerprint=self.pins.get(node_id, ""),
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("%s: skipping agent %s: %s", self.sleepers_file, node_id[:12], exc)
                continue
            record.wake_count, record.last_wake_at = wakes.get(node_id, (0, 0.0))
            self.agents[node_id] = record
            self._start_supervisor(record)
            self._emit("added", record)
            restored += 1
        for node_id, (count, at) in wakes.items():
            known = self.agents.get(node_id)
            if known is not None and not known.wake_count:
                known.wake_count, known.last_wake_at = count, at
        self._sleepers_saved = body
        return restored

    def _wake_entry(self, node_id: str, value: Any) -> tuple[int, float] | None:
        """One of the file's `wakes` ([count, unix time of the last packet]); None, with a warning, if malformed."""
        try:
            count, at = value
            return int(count), float(at)
        except (TypeError, ValueError) as exc:
            log.warning("%s: skipping the wake count of agent %s: %s", self.sleepers_file, str(node_id)[:12], exc)
            return None

    def _sleepers_body(self) -> dict[str, Any]:
        sleeping = {
            r.node_id: {
                "name": r.name,
                "address": r.address,
                "source": r.source,
                "since": r.state_since,
                "info": asdict(r.info),
            }
            for r in self.agents.values()
            if r.asleep and r.info is not None
        }
        wakes = {r.node_id: [r.wake_count, r.last_wake_at] for r in self.agents.values() if r.last_wake_at}
        return {"version": 1, "sleeping": sleeping, "wakes": wakes}

    def _save_sleepers(self) -> None:
        """Write the file when what it says changed: off the loop, whole (tmp + rename), one writer at a time."""
        if self.sleepers_file is None or (self._sleepers_writer is not None and not self._sleepers_writer.done()):
            return  # the running writer writes again when it ends if anything changed meanwhile
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sleepers_writer = asyncio.create_task(self._write_sleepers())

    async def _write_sleepers(self) -> None:
        assert self.sleepers_file is not None
        while True:
            body = self._sleepers_body()
            if body == self._sleepers_saved:
                return
            try:
                await asyncio.to_thread(_write_json, self.sleepers_file, body)
            except OSError as exc:
                log.warning("cannot keep the sleeping agents in %s: %s", self.sleepers_file, exc)
                return
            self._sleepers_saved = body

    # ---- trust

    async def _connect(self, record: AgentRecord) -> AgentClient:
        """A client for the record's address, once its certificate proves the node id (and matches the pin)."""
        if self.identity is None:
            return AgentClient(record.address)
        cert = await fetch_certificate(record.address, timeout=max(2.0, self.period * 2))
        node_id, fingerprint = node_id_of_cert(cert)
        name = record.name or record.node_id[:12]
        if node_id != record.node_id:
            raise Impersonation(
                f"{record.address} presents a certificate for node {node_id[:12]}, not agent {name} "
                f"({record.node_id[:12]}): refused; if {name} was reinstalled it is a new agent: "
                f"remove the old entry (tensorfleet agents rm {record.node_id[:12]})"
            )
        pinned = self.pins.get(node_id)
        if pinned and pinned != fingerprint:
            raise Impersonation(changed_certificate(name, fingerprint, pinned))
        token = record.pair_token or self.cluster_token
        return AgentClient(record.address, AgentTrust(cert, self.identity, pair_token=token))

    def _trust(self, record: AgentRecord, client: AgentClient) -> None:
        """Paired: pin the certificate by node id (trust on first use) and remember it."""
        if client.trust is not None:
            self.pins.setdefault(record.node_id, client.trust.agent_fingerprint)
            record.fingerprint = self.pins[record.node_id]
        newly = not record.paired
        record.paired, record.pair_token = True, ""
        if self._persist is not None:
            self._persist(record)
        if newly:
            self._emit("paired", record)

    # ---- supervision

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _start_supervisor(self, record: AgentRecord) -> None:
        record.supervisor = asyncio.create_task(self._supervise(record), name=f"agent-{record.node_id[:8]}")

    def _restart_supervisor(self, record: AgentRecord) -> None:
        self._spawn(self._restart(record))

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
            try:
                if record.client is None:
                    record.client = await self._connect(record)
                client = record.client
                info = await client.get_info(timeout=max(2.0, self.period * 2))
                if info.node_id != record.node_id:
                    raise Impersonation(f"the agent at {record.address} is {info.node_id}, not {record.node_id}")
                record.info, record.name, record.error = pool_bound(record, info), clean_text(info.name), ""
                if record.refused:
                    log.info("agent %s: its certificate is accepted again", record.name)
                    record.refused = ""
                self._seen(record)
                refused = await self._refusal(client)
                if refused:
                    await self._unpaired(record, client, refused)
                    continue
                if not record.paired or not record.fingerprint:
                    self._trust(record, client)
                self._seen(record)  # pairing may have taken a while: silence counts from now, not from GetInfo
                self._set_state(record, AgentState.ONLINE)
                backoff = 0.5
                async for sample in client.telemetry(self.period):
                    record.telemetry = sample
                    self._seen(record)
                    if record.state is AgentState.LOST or record.asleep:  # silence ended (or it woke up)
                        self._set_state(record, AgentState.ONLINE)
                    self._emit("telemetry", record)
                raise FleetError("telemetry stream ended")
            except asyncio.CancelledError:
                raise
            except Impersonation as exc:
                if record.refused != str(exc):  # retried every 10 s: say it once
                    log.warning("%s", exc)  # names the agent and says what to do
                    record.refused = str(exc)
                    self._emit("updated", record)
                record.error = ""
                self._set_state(record, AgentState.LOST)
                backoff = 10.0
                if record.client is not None:
                    await record.client.close()
                    record.client = None
            except (grpc.aio.AioRpcError, FleetError, OSError, ssl.SSLError) as exc:
                text = _rpc_text(record.address, exc)
                if record.stopping:
                    text = f"shut down after draining ({text})"
                if (isinstance(exc, OSError | ssl.SSLError) or _handshake_failed(exc)) and record.client is not None:
                    await record.client.close()  # the next round fetches the certificate and checks the pin
                    record.client = None
                if record.state is AgentState.ONLINE and backoff == 0.5:
                    backoff = 0.0  # one immediate re-open before declaring the agent lost
                else:
                    self._gone(record, text)
                    backoff = min(_MAX_BACKOFF, max(0.5, backoff * 2))
            except Exception as exc:  # never let one agent's surprise end its supervision
                log.exception("agent %s: unexpected error", record.name or record.node_id[:12])
                record.error = f"{type(exc).__name__}: {exc}"
                self._set_state(record, AgentState.LOST)
                backoff = 5.0
            await asyncio.sleep(backoff)

    async def _unpaired(self, record: AgentRecord, client: AgentClient, why: str) -> None:
        """Listed (paired: false) and never scheduled; liveness by polling GetInfo until someone pairs it."""
        record.paired = False
        record.error = why
        self._set_state(record, AgentState.ONLINE)
        self._emit("updated", record)
        while True:
            await asyncio.sleep(self.period)
            info = await client.get_info(timeout=max(2.0, self.period * 2))
            record.info = pool_bound(record, info)
            self._seen(record)
            if not await self._refusal(client):
                return  # paired meanwhile (e.g. `tensorfleet-agent` got our cluster token)

    @staticmethod
    async def _refusal(client: AgentClient) -> str:
        """Why the agent refuses us a session ('' when it accepts us)."""
        try:
            await client.authenticate()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
            return str(exc.details())
        return ""

    def heard_from(self, node_id: str) -> None:
        """The agent answered on another stream (a task event, a blob it is reading): alive, though its telemetry
        may be late behind data on a saturated link. Only an ONLINE agent's silence deadline moves: a LOST one comes
        back by its telemetry (its session restarts)."""
        record = self.agents.get(node_id)
        if record is not None and record.state is AgentState.ONLINE:
            record._silence_deadline = time.monotonic() + self.silence_limit

    def _seen(self, record: AgentRecord) -> None:
        record.last_seen = time.time()
        record._silence_deadline = time.monotonic() + self.silence_limit

    async def _watch_silence(self) -> None:
        """LOST after silence_limit of silence while this controller was listening: a loop that was stalled (a long
        synchronous step, a host swapping or suspended) did not read the telemetry that arrived meanwhile, so the
        stall does not count as the agents' silence (under load every agent was declared lost at once)."""
        tick = 0.2
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            stalled = now - last - tick - _STALL_SLACK
            last = now
            if stalled > 0:
                for record in self.agents.values():
                    record._silence_deadline += stalled
                if stalled > 1.0:
                    log.info("controller loop stalled %.1fs: agents' silence deadlines moved on as much", stalled)
                continue  # the telemetry read during the stall is handled next: look again after it
            for record in list(self.agents.values()):
                if record.state is AgentState.ONLINE and now > record._silence_deadline:
                    self._gone(record, f"no telemetry for {self.silence_limit:g}s")
                elif record.state is AgentState.WAKING and now > record._wake_deadline:
                    record.error = f"did not wake within {self.wake_timeout:g} s of the magic packet"
                    log.warning("agent %s (%s) %s", record.name, record.node_id[:12], record.error)
                    self._set_state(record, AgentState.SLEEPING)

    def _gone(self, record: AgentRecord, text: str) -> None:
        """It stopped answering: SLEEPING when it said it was about to suspend (or sleeps already), else LOST."""
        if record.asleep:
            return  # still asleep (or being woken): not an error; WAKING ends at its deadline
        if record.going_to_sleep:
            record.error = ""
            self._set_state(record, AgentState.SLEEPING)
            return
        record.error = text
        self._set_state(record, AgentState.LOST)

    def _set_state(self, record: AgentRecord, state: AgentState) -> None:
        if record.state is state:
            return
        previous = record.state
        record.state, record.state_since = state, time.time()
        if state.value in ASLEEP or previous.value in ASLEEP:
            self._save_sleepers()
        if state is AgentState.SLEEPING and previous is not AgentState.WAKING:
            log.info("agent %s (%s) is SLEEPING (it suspended its machine)", record.name, record.node_id[:12])
            self._emit("lost", record)  # not answering: its work (if any) is re-placed like a lost agent's
        elif state.value in ASLEEP:
            self._emit("updated", record)
        elif state is AgentState.ONLINE and previous.value in ASLEEP:
            if previous is AgentState.WAKING:
                record.wake_count += 1
                log.info(
                    "agent %s (%s) woke up %.1f s after the magic packet (wake-up %d)",
                    *(record.name, record.node_id[:12], time.time() - record.last_wake_at, record.wake_count),
                )
            else:
                log.info("agent %s (%s) is awake", record.name, record.node_id[:12])
            record.error = ""
            if record.telemetry is not None and record.telemetry.going_to_sleep:  # the sample before it slept
                record.telemetry = dataclasses.replace(record.telemetry, going_to_sleep=False)
            self._emit("back", record)
        elif state is AgentState.LOST:
            if not record.refused:  # a refusal was logged already, with its reason
                log.warning("agent %s (%s) LOST: %s", record.name, record.node_id[:12], record.error or record.warning)
            self._emit("lost", record)
        elif previous is AgentState.LOST:
            log.info("agent %s (%s) is back", record.name, record.node_id[:12])
            self._emit("back", record)
        else:
            log.info("agent %s (%s) ONLINE at %s", record.name, record.node_id[:12], record.address)
            self._emit("added", record)
