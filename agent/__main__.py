"""`tensorfleet-agent`: command line and signal handling (the only place that touches signals)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import platformdirs

from tensorfleet_agent.core.version import AGENT_VERSION
from tensorfleet_agent.discovery.interfaces import ENV_VAR, parse_interfaces
from tensorfleet_agent.logging_setup import configure_logging
from tensorfleet_agent.pool_member import JoinSettings
from tensorfleet_agent.pool_member import add_arguments as add_join_arguments
from tensorfleet_agent.pool_member import settings_from as join_settings

log = logging.getLogger("tensorfleet_agent")
ENV_CACHE_VAR = "TENSORFLEET_ENV_CACHE_GB"
PYTHON_VAR = "TENSORFLEET_PROJECT_PYTHON"  # = runtime.envs.PYTHON_VAR (not imported here: it pulls in uv)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tensorfleet", appauthor=False)) / "agent"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tensorfleet-agent",
        description="TensorFleet agent: runs training tasks on this machine for a TensorFleet controller. "
        "`tensorfleet-agent token` prints a new join token; `tensorfleet-agent unpair FINGERPRINT` revokes a "
        "controller; `tensorfleet-agent envs list|prune` shows or removes a stopped agent's project envs; "
        "`tensorfleet-agent desk status|pause|resume` sees or controls desk mode. "
        "TENSORFLEET_CLUSTER_TOKEN pairs automatically with controllers that share it.",
    )
    p.add_argument("--version", action="version", version=f"tensorfleet-agent {AGENT_VERSION}")
    p.add_argument("--host", default="0.0.0.0", help="address to serve gRPC on (default: 0.0.0.0)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port; 0 picks a free one (default: 50051)")
    p.add_argument("--name", default=socket.gethostname(), help="label shown in the fleet (default: hostname)")
    p.add_argument("--data-dir", type=Path, default=None, help=f"state directory (default: {default_data_dir()})")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML settings kept across restarts, e.g. a [desk] section (default: DATA_DIR/agent.toml if it exists); "
        "flags win over the file",
    )
    p.add_argument(
        "--interfaces",
        default=None,
        help=f"comma list of IPv4 addresses or interface names for mDNS (default: ${ENV_VAR} or all)",
    )
    p.add_argument("--no-advertise", action="store_true", help="do not announce this agent over mDNS")
    p.add_argument(
        "--cpu-slots",
        type=int,
        default=None,
        help="task slots on a machine without GPUs (default: max(1, cores // 4)); with GPUs, one slot per GPU",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="on SIGTERM, seconds to let running tasks finish before cancelling them (default: 60)",
    )
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label for placement constraints (repeatable)",
    )
    p.add_argument("--blob-cache-gb", type=float, default=20.0, help="blob cache size limit (default: 20 GB)")
    p.add_argument(
        "--env-cache-gb",
        type=float,
        default=None,
        help="size of the cache of project Python envs (uv-built) in the data dir; least recently used envs are "
        f"removed beyond it (default: ${ENV_CACHE_VAR} or 20 GB)",
    )
    p.add_argument(
        "--python",
        default=None,
        metavar="PATH",
        help="the Python interpreter (>= 3.9) project jobs' envs are built on and --env none runs (default: "
        f"${PYTHON_VAR}, else the agent's own Python; a packaged agent looks for one with `uv python find`, then "
        "python3 on PATH)",
    )
    p.add_argument(
        "--journal-retention-days",
        type=float,
        default=7.0,
        help="keep finished tasks' journals this long (default: 7)",
    )
    p.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="write a JSON file with the bound port and node id once serving",
    )
    p.add_argument(
        "--exit-with-pid",
        type=int,
        default=None,
        metavar="PID",
        help="drain and exit when process PID ends (the controller that started this local agent)",
    )
    p.add_argument(
        "--spare-workers",
        type=int,
        default=1,
        choices=range(0, 9),
        metavar="N",
        help="with --no-fork-server: worker processes kept started with scikit-learn imported, for new jobs"
        " (default: 1; 0 = none)",
    )
    p.add_argument(
        "--no-fork-server",
        action="store_true",
        help="spawn a worker per task (and keep it warm for its job) instead of forking each task's worker from a"
        " warm, clean fork server",
    )
    p.add_argument(
        "--join-token-stdin",
        action="store_true",
        help="read the join token from the first line of stdin instead of $TENSORFLEET_JOIN_TOKEN "
        "(an environment variable stays readable in /proc/PID/environ for the agent's life)",
    )
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC without pairing (loopback development only)")
    p.add_argument("--no-scripts", action="store_true", help="refuse user-script tasks, even from paired controllers")
    p.add_argument(
        "--suspend-when-idle",
        default=None,
        metavar="DURATION",
        help="suspend the machine after this long without work (e.g. 30m, 90s), announcing SLEEPING first so "
        "the controller can wake it by Wake-on-LAN (default: never)",
    )
    p.add_argument(
        "--suspend-command",
        default=None,
        metavar="CMD",
        help="the command that suspends the machine and returns once it resumed; run without a shell, with "
        "$TENSORFLEET_AGENT_PID set (default: systemctl suspend)",
    )
    p.add_argument(
        "--wol",
        default=None,
        metavar="IFACE[,IFACE]|all",
        help="interfaces that wake this machine on a magic packet, when ethtool cannot tell (default: ethtool's "
        '"Wake-on: g" where ethtool exists)',
    )
    add_join_arguments(p)  # --join, --join-credential-file, --advertise-address, --exit-when-idle (issue 25)
    from tensorfleet_agent.desk.cli import add_desk_args

    add_desk_args(p)
    p.add_argument("--log-level", default=os.environ.get("TENSORFLEET_LOG_LEVEL", "INFO"))
    return p


def _admin(argv: list[str]) -> int:
    """`tensorfleet-agent token` and `tensorfleet-agent unpair FINGERPRINT`, acting on the data dir."""
    from tensorfleet_agent.security.authority import new_join_token, unpair

    p = argparse.ArgumentParser(prog=f"tensorfleet-agent {argv[0]}")
    if argv[0] == "unpair":
        p.add_argument("fingerprint", help="the controller's certificate fingerprint (or its first 8+ characters)")
    else:
        p.add_argument("--ttl", type=float, default=3600.0, help="seconds the token stays valid (default: 3600)")
    p.add_argument("--data-dir", type=Path, default=None, help=f"the agent's state directory ({default_data_dir()})")
    args = p.parse_args(argv[1:])
    identity_dir = (args.data_dir or default_data_dir()) / "identity"
    if argv[0] == "unpair":
        if not unpair(identity_dir, args.fingerprint):
            print(f"tensorfleet-agent: no single paired controller matches {args.fingerprint!r}", file=sys.stderr)
            return 2
        print(f"unpaired {args.fingerprint}; its sessions end now", file=sys.stderr)
        return 0
    if args.ttl <= 0:
        print("tensorfleet-agent: --ttl must be > 0", file=sys.stderr)
        return 2
    print(new_join_token(identity_dir, args.ttl))
    return 0


def _envs(argv: list[str]) -> int:
    """`tensorfleet-agent envs list|prune`: a stopped agent's project envs, read and pruned in its data dir."""
    p = argparse.ArgumentParser(
        prog="tensorfleet-agent envs",
        description="The project envs in a stopped agent's data dir (a running agent's: "
        "`tensorfleet agents envs AGENT [--prune]` on the controller).",
    )
    p.add_argument("action", choices=("list", "prune"), help="list the envs, or remove unused ones")
    p.add_argument("--data-dir", type=Path, default=None, help=f"the agent's state directory ({default_data_dir()})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--keep-gb", type=float, default=0.0, help="prune: keep the most recently used envs up to this size (0)"
    )
    args = p.parse_args(argv[1:])
    if not math.isfinite(args.keep_gb) or args.keep_gb < 0:
        print(f"tensorfleet-agent envs: --keep-gb must be >= 0, got {args.keep_gb}", file=sys.stderr)
        return 2
    data_dir = (args.data_dir or default_data_dir()).resolve()
    if not data_dir.is_dir():
        print(f"tensorfleet-agent envs: no agent data dir at {data_dir}", file=sys.stderr)
        return 2
    from tensorfleet_agent.datadir_lock import DataDirInUse, DataDirLock

    prune = " --prune" if args.action == "prune" else ""
    lock = DataDirLock(data_dir, "tensorfleet-agent envs")
    try:
        lock.acquire()
    except DataDirInUse as exc:
        print(
            f"tensorfleet-agent envs: the agent (pid {exc.holder.pid or '?'}) is running on {data_dir}; ask it "
            f"through the controller instead: tensorfleet agents envs AGENT{prune}",
            file=sys.stderr,
        )
        return 1
    try:
        if (data_dir / "envs").is_dir():
            envs, removed, freed = asyncio.run(_envs_offline(data_dir / "envs", args.action, int(args.keep_gb * 2**30)))
        else:
            envs, removed, freed = [], [], 0
    finally:
        lock.release()
    _print_envs(envs, args.action, removed, freed, args.json)
    return 0


async def _envs_offline(root: Path, action: str, keep_bytes: int) -> tuple[list[Any], list[str], int]:
    """The envs under `root` (after a prune when asked), the keys removed and the bytes freed."""
    from tensorfleet_agent.runtime.envs import EnvCache

    cache = EnvCache(root)
    envs = await cache.list()
    if action != "prune":
        return envs, [], 0
    sizes = {e.key: e.size for e in envs}
    removed = await cache.prune(keep_bytes)
    return await cache.list(), removed, sum(sizes[key] for key in removed)


def _print_envs(envs: list[Any], action: str, removed: list[str], freed: int, as_json: bool) -> None:
    import dataclasses
    import json

    if as_json:  # the keys of `tensorfleet agents envs --json` (rpc.convert.ENV_SUMMARY_KEYS)
        body: dict[str, object] = {"envs": [dataclasses.asdict(e) for e in envs]}
        if action == "prune":
            body.update(removed=removed, freed_bytes=freed)
        print(json.dumps(body, indent=2))
        return
    if action == "prune":
        print(f"removed {len(removed)} env(s), {freed / 2**30:.2f} GiB freed")
    if not envs:
        print("no project envs" + (" left" if action == "prune" else ""))
        return
    print(f"{'KEY':<14} {'SIZE':>11} {'LAST USED':<19} {'JOBS':>5}  {'PYTHON':<16} SOURCE")
    for e in envs:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.last_used))
        print(f"{e.key[:12]:<14} {e.size / 2**20:>7.0f} MiB {used:<19} {e.jobs:>5}  {e.python:<16} {e.source}")
    print(f"{len(envs)} env(s), {sum(e.size for e in envs) / 2**30:.2f} GiB")


def _env_cache_gb(flag: float | None) -> float:
    """--env-cache-gb, else $TENSORFLEET_ENV_CACHE_GB, else 20."""
    raw = os.environ.get(ENV_CACHE_VAR, "") if flag is None else str(flag)
    where = f"${ENV_CACHE_VAR}" if flag is None else "--env-cache-gb"
    try:
        value = float(raw) if raw.strip() else 20.0
    except ValueError:
        raise ValueError(f"{where} must be a number of GB, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be >= 0 GB, got {raw}")
    return value


def _project_python(flag: str | None) -> str | None:
    """--python, else $TENSORFLEET_PROJECT_PYTHON, else None (the default rule of runtime.envs.find_python); a name
    that is no executable is refused now (whether it is a usable Python is checked, and logged, at start)."""
    import shutil

    value = flag if flag is not None else os.environ.get(PYTHON_VAR, "")
    if not value.strip():
        return None
    where = "--python" if flag is not None else f"${PYTHON_VAR}"
    if shutil.which(value) is None:
        raise ValueError(f"{where} {value}: not an executable file, nor a command on PATH")
    return value


def _power(idle: str | None, command: str | None) -> tuple[float, tuple[str, ...]]:
    """--suspend-when-idle and --suspend-command: (seconds, argv); (0, default) when it never suspends."""
    from tensorfleet_agent.runtime.power import DEFAULT_COMMAND, parse_command, parse_duration

    if idle is None:
        if command is not None:
            raise ValueError("--suspend-command needs --suspend-when-idle DURATION")
        return 0.0, tuple(DEFAULT_COMMAND.split())
    seconds = parse_duration(idle, "--suspend-when-idle")
    if seconds <= 0:
        raise ValueError(f"--suspend-when-idle must be longer than 0, got {idle!r}")
    return seconds, parse_command(command or DEFAULT_COMMAND)


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--label must look like KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--tensorfleet-worker"]:  # frozen builds start workers through this executable
        from tensorfleet_agent.runtime.worker import main as worker_main

        return worker_main(argv[1:])
    if argv[:1] == ["--tensorfleet-forkserver"]:  # and their fork server
        from tensorfleet_agent.runtime.forkserver import main as forkserver_main

        return forkserver_main(argv[1:])
    if argv[:1] in (["token"], ["unpair"]):
        return _admin(argv)
    if argv[:1] == ["envs"]:
        return _envs(argv)
    if argv[:1] == ["desk"]:
        from tensorfleet_agent.desk.cli import desk_command

        return desk_command(argv, default_data_dir())
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    from tensorfleet_agent.daemon import AgentConfig  # after logging: imports grpc

    # Secrets leave os.environ at once: nothing this process starts (workers, subprocesses) inherits them.
    cluster_token = os.environ.pop("TENSORFLEET_CLUSTER_TOKEN", "")
    join_token = os.environ.pop("TENSORFLEET_JOIN_TOKEN", "")
    if args.join_token_stdin:
        join_token = sys.stdin.readline().strip()
    try:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be between 0 and 65535, got {args.port}")
        if args.cpu_slots is not None and args.cpu_slots < 1:
            raise ValueError(f"--cpu-slots must be at least 1, got {args.cpu_slots}")
        from tensorfleet_agent.rpc.server import is_loopback

        if args.insecure and not is_loopback(args.host):
            raise ValueError(
                f"--insecure serves plaintext without pairing: only allowed on loopback, not on --host {args.host}"
            )
        if args.drain_timeout < 0:
            raise ValueError(f"--drain-timeout must be >= 0, got {args.drain_timeout}")
        env_cache_gb = _env_cache_gb(args.env_cache_gb)
        power = _power(args.suspend_when_idle, args.suspend_command)
        from tensorfleet_agent.runtime.interfaces import WolFlag

        wol = WolFlag.parse(args.wol)
        from tensorfleet_agent.config_file import load_config
        from tensorfleet_agent.desk.cli import desk_config

        file_settings = load_config(args.config, (args.data_dir or default_data_dir()).resolve())
        desk = desk_config(args, file_settings.get("desk"))
        project_python = _project_python(args.python)
        labels = _labels(args.label)
        join = join_settings(args)  # pops the join credential from the environment
        if join is not None and join.credential:
            labels.setdefault("pool", join.pool)  # a job's `pool: NAME` runs on these agents
            join_token = join_token or join.credential  # the controller pairs with it after JoinCluster
        config = AgentConfig(
            data_dir=(args.data_dir or default_data_dir()).resolve(),
            host=args.host,
            port=args.port,
            name=args.name,
            interfaces=parse_interfaces(args.interfaces),
            advertise=not args.no_advertise,
            cpu_slots=args.cpu_slots,
            drain_timeout=args.drain_timeout,
            metrics_port=args.metrics_port,
            labels=labels,
            blob_cache_bytes=int(args.blob_cache_gb * 2**30),
            env_cache_bytes=int(env_cache_gb * 2**30),
            project_python=project_python,
            journal_retention_seconds=args.journal_retention_days * 86400,
            ready_file=args.ready_file,
            insecure=args.insecure,
            cluster_token=cluster_token,
            join_token=join_token,
            allow_scripts=not args.no_scripts,
            spare_workers=args.spare_workers,
            fork_server=not args.no_fork_server,
            suspend_when_idle=power[0],
            suspend_command=power[1],
            wol=wol,
            pool=join.pool if join is not None else "",
            allocation_id=os.environ.get("SLURM_JOB_ID", "") if join is not None and join.controller else "",
            desk=desk,
        )
    except ValueError as exc:
        print(f"tensorfleet-agent: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, args.exit_with_pid, join))


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    import psutil

    while not stop.is_set():
        try:
            gone = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        if gone:
            log.warning("process %d that started this agent is gone; stopping", pid)
            stop.set()
            return
        await asyncio.sleep(0.5)


async def _serve(config: object, exit_with_pid: int | None = None, join: JoinSettings | None = None) -> int:
    from tensorfleet_agent import collector

    collector.pause()  # until its start is over (collector.py)
    from tensorfleet_agent.daemon import AgentConfig, AgentDaemon
    from tensorfleet_agent.datadir_lock import DataDirInUse
    from tensorfleet_agent.rpc.server import BindError

    assert isinstance(config, AgentConfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers go in before mDNS registration, so a SIGTERM always ends in a goodbye.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = AgentDaemon(config)
    try:
        await daemon.start()
    except (BindError, DataDirInUse, OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        await daemon.stop(drain=False)
        return 1
    collector.settle()  # its journal is loaded: what it holds now is not scanned again (collector.py)
    watcher = asyncio.create_task(_watch_parent(exit_with_pid, stop)) if exit_with_pid else None
    from tensorfleet_agent.pool_member import run as run_member

    member = asyncio.create_task(run_member(daemon, join, stop)) if join is not None else None
    await stop.wait()
    for task in (watcher, member):
        if task is not None and not task.done():
            task.cancel()
    refused = member is not None and not member.cancelled() and member.done() and member.result() is False
    if join is not None:  # a pool's agent hands its tasks back (re-queued, not failed) before the drain
        from tensorfleet_agent.pool_member import preempt_on_stop

        preempt_on_stop(daemon, join)
    log.info("stop requested: draining (up to %.0fs)", config.drain_timeout)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    await daemon.stop(drain=True)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
