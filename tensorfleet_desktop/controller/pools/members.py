"""Pool agents in the fleet: JoinCluster's checks and pairing, and what the pool manager asks of the fleet."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.identity import node_id_of_cert
from tensorfleet_agent.rpc.client import fetch_certificate
from tensorfleet_agent.security.secrets import register
from tensorfleet_desktop.controller.fleet import (
    AgentNotFound,
    AgentRecord,
    Fleet,
    FleetError,
    unreachable,
)
from tensorfleet_desktop.controller.pools.manager import JoinRefused, JoinRequest, PoolManager
from tensorfleet_desktop.controller.store.base import JobStore

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FORGET_PATIENCE = 300.0  # seconds an ended allocation's agent may keep attempts before it is forgotten anyway
FORGET_STEP = 2.0
STALE_AFTER = 120.0  # seconds after a restart a remembered pool agent has to answer before it is forgotten
log = logging.getLogger(__name__)


class FleetMembers:
    """The manager's view of the fleet."""

    def __init__(self, fleet: Fleet, store: JobStore) -> None:
        self.fleet = fleet
        self.store = store

    def busy(self, node_id: str) -> bool:
        record = self.fleet.agents.get(node_id)
        if record is None:
            return False
        return bool(record.placed) or (record.telemetry is not None and record.telemetry.tasks_running > 0)

    def members(self, allocation_id: str) -> list[str]:
        """The pool agents that say (NodeInfo.allocation_id) they run in this allocation."""
        return [
            r.node_id
            for r in self.fleet.agents.values()
            if r.source == "pool" and r.info is not None and r.info.allocation_id == allocation_id
        ]

    async def forget_unreachable(self, after: float = STALE_AFTER) -> None:
        """Pool agents remembered from an earlier run whose allocation ended meanwhile never answer again: `after`
        seconds after the start, a pool agent that has not answered once in this run is forgotten (one that joined
        since has streamed telemetry within seconds)."""
        await asyncio.sleep(after)
        for record in list(self.fleet.agents.values()):
            if record.source == "pool" and record.last_seen == 0.0 and not record.placed:
                log.info("pool agent %s did not come back after the restart: forgotten", record.name or record.node_id)
                await self.forget(record.node_id)

    async def forget(self, node_id: str) -> None:
        """Its allocation ended: the agent is gone for good, not LOST; its stored record goes too. An agent that still
        holds attempts (its allocation hit the time limit mid-task) is forgotten once the core has moved them."""
        for _ in range(int(FORGET_PATIENCE / FORGET_STEP)):
            record = self.fleet.agents.get(node_id)
            if record is None:
                return
            if not record.placed:
                break
            await asyncio.sleep(FORGET_STEP)
        with contextlib.suppress(AgentNotFound):
            await self.fleet.remove(node_id)
            self.store.delete_agent(node_id)


def check_request(request: JoinRequest) -> None:
    """The request's own fields, before its credential is looked at; ValidationError names the field."""
    host, sep, port = request.address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError("address", f"must look like HOST:PORT, got {request.address[:80]!r}")
    if not request.credential:
        raise ValidationError("credential", "is required (the agent's TENSORFLEET_JOIN_CREDENTIAL)")
    if not request.node_id or len(request.node_id) > 128:
        raise ValidationError("node_id", "is required (the agent's node id)")
    if request.cert_fingerprint and not _HEX64.match(request.cert_fingerprint.lower()):
        raise ValidationError("cert_fingerprint", "must be 64 hex characters (sha256 of the agent's certificate)")


def refuse_takeover(fleet: Fleet, node_id: str) -> None:
    """A join credential admits pool agents only: an agent already in the fleet by pairing, mDNS or the local one
    (whose node id and certificate anyone can learn from a TLS handshake) is never taken over, re-sourced as a pool
    agent and later forgotten with its allocation (JoinRefused)."""
    record = fleet.agents.get(node_id)
    if record is not None and record.source != "pool":
        raise JoinRefused(
            f"node_id: agent {record.name or node_id[:12]} is already in this fleet as a {record.source} agent; "
            "a join credential cannot take it over (remove it first with `tensorfleet agents remove` if this "
            "machine now serves a pool)"
        )


async def join(manager: PoolManager, fleet: Fleet, request: JoinRequest) -> AgentRecord:
    """Admit a joining agent: its credential (JoinRefused), its certificate (it must be the one it names, and prove
    its node id), then add it and pair with the credential as its join token, as `agents pair` does."""
    check_request(request)
    alloc = manager.admit(request)
    refuse_takeover(fleet, request.node_id)
    if fleet.identity is not None:
        if not request.cert_fingerprint:
            raise ValidationError("cert_fingerprint", "is required: this controller pairs over TLS")
        try:
            cert = await fetch_certificate(request.address, timeout=5)
        except (OSError, ssl.SSLError) as exc:
            raise FleetError(f"cannot reach the joining agent: {unreachable(request.address, exc)}") from None
        node_id, fingerprint = node_id_of_cert(cert)
        if fingerprint != request.cert_fingerprint.lower():
            raise FleetError(
                f"cert_fingerprint: {request.address} presents certificate {fingerprint[:16]}, not "
                f"{request.cert_fingerprint[:16]} as the joining agent said"
            )
        if node_id != request.node_id:
            raise FleetError(f"node_id: the certificate at {request.address} is node {node_id[:12]}, not the one named")
    register(request.credential)  # never printed in a log or an error
    refuse_takeover(fleet, request.node_id)  # again: it may have been added while the certificate was fetched
    pool = alloc.pool if alloc is not None else manager.credentials.verify(request.credential).pool
    record = await fleet.add(
        request.address, "pool", pair_token=request.credential if fleet.identity else "", pool=pool
    )  # its credential's pool is its pool label, whatever the agent reports (fleet.pool_bound)
    manager.joined(alloc, record.node_id)
    return record
