"""Wiring a controller's pools: the signing key, the address its pool agents dial, the agent command."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
from pathlib import Path

from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.fleet import Fleet
from tensorfleet_desktop.controller.pools.credentials import Credentials, load_or_create_key
from tensorfleet_desktop.controller.pools.manager import PoolManager
from tensorfleet_desktop.controller.pools.members import FleetMembers
from tensorfleet_desktop.controller.pools.settings import PoolSettings
from tensorfleet_desktop.controller.pools.slurm import SlurmDriver
from tensorfleet_desktop.controller.store.base import JobStore

#: host:port the allocations' agents dial (default: this controller's --host and port; the host name for 0.0.0.0)
ADDRESS_VAR = "TENSORFLEET_POOL_CONTROLLER_ADDRESS"
#: the command that starts an agent on a pool's node (default: this Python's `-m tensorfleet_agent` for a Slurm
#: reached here, whose nodes share this installation; `tensorfleet-agent` on PATH over ssh)
AGENT_COMMAND_VAR = "TENSORFLEET_POOL_AGENT_COMMAND"


def agent_address(host: str, port: int) -> str:
    given = os.environ.get(ADDRESS_VAR, "").strip()
    if given:
        return given
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"{host}:{port}"


def agent_command(settings: PoolSettings) -> list[str]:
    given = os.environ.get(AGENT_COMMAND_VAR, "").strip()
    if given:
        return shlex.split(given)
    return ["tensorfleet-agent"] if settings.login else [sys.executable, "-m", "tensorfleet_agent"]


async def start_pools(
    controller: Controller, fleet: Fleet, store: JobStore, identity_dir: Path, fingerprint: str, address: str, tls: bool
) -> PoolManager:
    """The started pool manager, registered as a capacity source of `controller`."""
    key = await asyncio.to_thread(load_or_create_key, identity_dir)

    def job_state(job_id: str) -> str | None:
        job = controller.jobs.get(job_id)
        return None if job is None else str(job.state.value)

    manager = PoolManager(
        store,
        Credentials(key, fingerprint if tls else "", tls),
        address,
        agent_command,
        job_state,
        driver_for=lambda p: SlurmDriver(p.login),
    )
    members = FleetMembers(fleet, store)
    manager.agents = members
    await manager.start()
    manager.spawn(members.forget_unreachable())
    controller.add_capacity_source(manager)
    return manager
