"""An agent that joins a controller by address (a Slurm pool's allocation, a Kubernetes pod): the flags, the join
with retries, and the exit after an idle spell that ends a pool's allocation (issue 25).

Kept apart from the daemon: the agent's own `--join` and `--exit-when-idle` are all it adds; the credential becomes
the agent's one-time join token (the daemon's existing pairing), so the controller pairs as `agents pair` does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tensorfleet_agent.runtime.power import parse_duration
from tensorfleet_agent.security.join_credential import ENV_VAR, CredentialError, read_claims

if TYPE_CHECKING:
    from tensorfleet_agent.daemon import AgentDaemon

log = logging.getLogger(__name__)

JOIN_DEADLINE = 120.0  # seconds the agent keeps trying to reach the controller before it gives up and exits
IDLE_CHECK = 1.0  # seconds between looks at the running tasks
#: seconds a preempted task gets to save a checkpoint and stop (Slurm sends SIGKILL KillWait, 30 s by default, after
#: its SIGTERM)
PREEMPT_GRACE = 10.0


@dataclass(frozen=True)
class JoinSettings:
    controller: str  # host:port
    credential: str
    advertise: str  # host[:port] the controller dials; "" = worked out at start
    exit_when_idle: float  # seconds; 0 = never
    pool: str  # from the credential: the label pool=NAME the agent carries


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--join",
        default=None,
        metavar="HOST:PORT",
        help="join the controller at this address without mDNS (a Slurm pool's node, a Kubernetes pod); needs a "
        f"join credential in ${ENV_VAR} or --join-credential-file",
    )
    p.add_argument(
        "--join-credential-file", type=Path, default=None, metavar="PATH", help="read the join credential from here"
    )
    p.add_argument(
        "--advertise-address",
        default=None,
        metavar="HOST[:PORT]",
        help="with --join: the address the controller dials this agent at (default: --host, or the local address "
        "of the route to the controller; the port serving gRPC)",
    )
    p.add_argument(
        "--exit-when-idle",
        default=None,
        metavar="DURATION",
        help="drain and exit after this long with no task running (300, 90s, 5m, 1h): a pool's allocation ends",
    )


def settings_from(args: argparse.Namespace) -> JoinSettings | None:
    """The join settings the flags ask for (None without --join); ValueError naming the flag. Pops the
    credential from the environment (nothing the agent starts inherits it)."""
    from_env = os.environ.pop(ENV_VAR, "").strip()
    idle = parse_duration(args.exit_when_idle, "--exit-when-idle") if args.exit_when_idle else 0.0
    if args.join is None:
        for flag, value in (("--join-credential-file", args.join_credential_file), ("--advertise-address",
                            args.advertise_address)):  # fmt: skip
            if value is not None:
                raise ValueError(f"{flag} is for joining a controller: give --join HOST:PORT too")
        if idle:
            return JoinSettings("", "", "", idle, "")
        return None
    host, sep, port = args.join.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--join must look like HOST:PORT, got {args.join!r}")
    credential = from_env
    if args.join_credential_file is not None:
        try:
            credential = args.join_credential_file.read_text().strip().splitlines()[0].strip()
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"--join-credential-file {args.join_credential_file}: cannot read a credential ({exc})"
            ) from None
    if not credential:
        raise ValueError(f"--join needs a join credential: set ${ENV_VAR} or give --join-credential-file")
    try:
        claims = read_claims(credential)
    except CredentialError as exc:
        raise ValueError(f"the join credential ({ENV_VAR} / --join-credential-file): {exc}") from None
    if claims.expires < time.time():
        raise ValueError("the join credential has expired: ask the controller for a new one")
    advertise = (args.advertise_address or "").strip()
    if advertise.count(":") == 1 and not advertise.rpartition(":")[2].isdigit():
        raise ValueError(f"--advertise-address must look like HOST or HOST:PORT, got {advertise!r}")
    return JoinSettings(args.join, credential, advertise, idle, claims.pool)


def _route_address(controller: str) -> str:
    """The local address packets to the controller leave from (a UDP connect: nothing is sent). Blocking."""
    host, _, port = controller.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host.strip("[]"), int(port)))
        return str(s.getsockname()[0])


async def advertised(settings: JoinSettings, bound_host: str, port: int) -> str:
    given = settings.advertise
    if given:
        return given if given.count(":") == 1 else f"{given}:{port}"
    if bound_host not in ("0.0.0.0", "::", ""):
        return f"{bound_host}:{port}"
    return f"{await asyncio.to_thread(_route_address, settings.controller)}:{port}"


async def join(daemon: AgentDaemon, settings: JoinSettings) -> str:
    """JoinCluster, retried with a back-off while the controller is unreachable; the id it knows this agent by.
    JoinError when refused or after JOIN_DEADLINE."""
    from tensorfleet_agent.rpc.join import JoinError, join_cluster

    address = await advertised(settings, daemon.config.host, daemon.port)
    deadline = time.monotonic() + JOIN_DEADLINE
    delay = 0.5
    while True:
        try:
            agent_id = await join_cluster(
                settings.controller,
                settings.credential,
                address=address,
                node_id=daemon.node_id,
                cert_fingerprint="" if daemon.config.insecure else daemon.identity.fingerprint,
                allocation_id=os.environ.get("SLURM_JOB_ID", ""),
                hostname=os.environ.get("SLURMD_NODENAME", "") or socket.gethostname(),
            )
        except JoinError as exc:
            if exc.final or time.monotonic() + delay > deadline:
                raise
            log.warning("joining %s: %s; retrying in %.1fs", settings.controller, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        log.info("joined the controller at %s as %s (pool %s), dialled at %s", settings.controller,
                 agent_id[:12], settings.pool or "-", address)  # fmt: skip
        return agent_id


async def exit_when_idle(daemon: AgentDaemon, seconds: float, stop: asyncio.Event) -> None:
    """Set `stop` once no task has run for `seconds` (counted from start, and from each task's end)."""
    idle_since = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(IDLE_CHECK)
        if daemon.executor.tasks_running > 0:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= seconds:
            log.info("no task for %.0fs (--exit-when-idle): exiting", seconds)
            stop.set()
            return


async def run(daemon: AgentDaemon, settings: JoinSettings, stop: asyncio.Event) -> bool:
    """Join (when asked) and watch for idleness; a refused join stops the agent, which says why (False)."""
    from tensorfleet_agent.rpc.join import JoinError

    if settings.controller:
        try:
            await join(daemon, settings)
        except JoinError as exc:
            log.error("cannot join the controller at %s: %s; stopping", settings.controller, exc)
            stop.set()
            return False
    if settings.exit_when_idle:
        await exit_when_idle(daemon, settings.exit_when_idle, stop)
    return True


def preempt_on_stop(daemon: AgentDaemon, settings: JoinSettings) -> list[str]:
    """A joined agent told to stop (Slurm's time limit or a preemption, a pod evicted: SIGTERM) gives its tasks back:
    each is asked to checkpoint and stop, and the controller queues it again instead of failing it. An agent that
    stops because it idled runs none. The ids of the tasks preempted."""
    if not settings.controller:
        return []
    job = os.environ.get("SLURM_JOB_ID", "")
    reason = f"Slurm allocation {job} is ending" if job else "the agent's node is going away"
    preempted = daemon.executor.preempt_all(f"{reason} (SIGTERM)", PREEMPT_GRACE)
    if preempted:
        log.warning("%s: %d task(s) asked to checkpoint and stop; their jobs are queued again", reason, len(preempted))
    return preempted
