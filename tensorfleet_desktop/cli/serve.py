"""The controller process: `tensorfleet serve` runs it in the foreground, `shutdown` stops it, `gc` frees the blobs
nothing refers to any more.

Imports little at the top (no client SDK, no rich): `tensorfleet serve` loads this module alone before it starts
its local agent (see serve)."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError

if TYPE_CHECKING:
    from tensorfleet_desktop.client import Client
    from tensorfleet_desktop.controller.app import ControllerConfig


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400 seconds, got {text}")
    return value


def add_serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the controller (and a local agent) in the foreground")
    s.set_defaults(run=serve)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=50050)
    s.add_argument("--data-dir", type=Path)
    s.add_argument("--interfaces", help="mDNS interfaces (default: $TENSORFLEET_MDNS_INTERFACES or all)")
    s.add_argument("--no-mdns", action="store_true", help="do not browse for agents")
    s.add_argument("--no-local-agent", action="store_true")
    s.add_argument("--local-agent-slots", type=int, help="slots of the local agent (default: its own default)")
    s.add_argument(
        "--local-agent-metrics-port",
        type=int,
        metavar="P",
        help="the local agent serves Prometheus /metrics on 127.0.0.1:P (0: a free port; see `agents --json`)",
    )
    s.add_argument("--agent", action="append", default=[], metavar="HOST:PORT", help="a manual agent (repeatable)")
    s.add_argument(
        "--store",
        default="",
        help="sqlite:///path (default: in the data dir) or mongodb://user@host:port/db; a password here shows in "
        "`ps`: put a URI with a password under [store] in the config file or in TENSORFLEET_MONGODB_URI",
    )
    s.add_argument(
        "--blobs",
        default="",
        help="file:///path (default: in the data dir) or s3://BUCKET?endpoint=HOST:PORT&secure=false "
        "(credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
    )
    s.add_argument(
        "--config", type=Path, help="TOML file with [store], [blobs] and [http] (default: DATA_DIR/config.toml)"
    )
    s.add_argument("--keep-checkpoints", type=int, default=3, help="latest checkpoints kept per job (default: 3)")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    s.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address /metrics listens on (default: 127.0.0.1; 0.0.0.0 for a Prometheus on another machine)",
    )
    s.add_argument(
        "--prometheus-sd",
        type=Path,
        help="file_sd targets file listing this controller and the agents serving /metrics "
        "(default: DATA_DIR/prometheus/targets.json)",
    )
    s.add_argument(
        "--http-port",
        type=int,
        metavar="P",
        help="serve the HTTP API (/api/v1, OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs) on port P too "
        "(0: a free port; default: [http] port in the config file, else none)",
    )
    s.add_argument(
        "--http-host",
        default=None,
        help="address the HTTP API listens on (default: [http] host in the config file, else --host); "
        "HTTPS with the controller's certificate off loopback",
    )
    s.add_argument("--telemetry-period", type=float, default=1.0)
    s.add_argument(
        "--gang-reserve-after",
        type=float,
        default=300.0,
        help="seconds a waiting multi-rank job lets smaller jobs backfill before reserving slots",
    )
    s.add_argument(
        "--wake-timeout",
        type=_positive_seconds,
        default=120.0,  # fleet.DEFAULT_WAKE_TIMEOUT (not imported: every command builds this parser)
        metavar="SECONDS",
        help="how long a sleeping agent sent a Wake-on-LAN packet has to answer before it counts as still asleep "
        "(queued work then waits on, or goes elsewhere; default 120)",
    )
    s.add_argument(
        "--insecure", action="store_true", help="plaintext to agents without pairing (loopback development only)"
    )
    s.add_argument(
        "--no-peer-transfer",
        action="store_true",
        help="send every dataset blob from the controller, never from peer agents that hold it "
        "(default: [datasets] peer_transfer in the config file, else on)",
    )
    s.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)


def add_shutdown_parser(sub: Any) -> None:
    s = sub.add_parser("shutdown", help="stop the controller (and its local agent)")
    s.set_defaults(call=shutdown)


def add_gc_parser(sub: Any) -> None:
    from tensorfleet_desktop.cli.output import add_format_flags

    s = sub.add_parser(
        "gc", help="delete blobs nothing refers to any more (deleted versions, datasets, old checkpoints)"
    )
    s.set_defaults(call=gc)
    s.add_argument(
        "--grace", type=float, default=600.0, help="spare blobs younger than this many seconds (default 600)"
    )
    add_format_flags(s)


def serve(args: argparse.Namespace) -> int:
    """Checks the flags, claims the data dir and starts the local agent, and only then imports the controller (its
    store, scheduler, gRPC services): the agent's own start-up runs meanwhile, in its process."""
    from tensorfleet_agent import collector

    collector.pause()  # until the controller has started (collector.py)
    from tensorfleet_agent.discovery.interfaces import parse_interfaces
    from tensorfleet_desktop.controller.settings import default_data_dir

    if args.insecure:
        from tensorfleet_agent.rpc.server import is_loopback  # gRPC: imported only for this check

        if not is_loopback(args.host):
            raise UsageError(
                f"--insecure serves plaintext without pairing: only on loopback, not on --host {args.host}"
            )
    for flag, port in (
        ("--metrics-port", args.metrics_port),
        ("--local-agent-metrics-port", args.local_agent_metrics_port),
        ("--http-port", args.http_port),
    ):
        if port is not None and not 0 <= port <= 65535:
            raise UsageError(f"{flag} must be between 0 and 65535 (0: a free port), got {port}")
    from tensorfleet_agent.security.files import unusable
    from tensorfleet_desktop.controller.settings import FileSettings, load_settings

    data_dir = (args.data_dir or default_data_dir()).resolve()
    config_path = args.config or (data_dir / "config.toml")
    try:
        settings = load_settings(config_path) if args.config or config_path.exists() else FileSettings()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except PermissionError as exc:  # another user's data dir, or one this user cannot read
        if args.config:
            raise UsageError(f"cannot read {config_path}: {exc.strerror or exc}") from None
        raise UsageError(str(unusable(data_dir, exc))) from None
    env_store = os.environ.get("TENSORFLEET_MONGODB_URI", "")

    def guard_secrets() -> None:  # imports the store's code (and asyncio): after the local agent started
        _guard_secrets(args.store, args.store or env_store or settings.store_uri, settings, config_path)

    try:
        interfaces = parse_interfaces(args.interfaces)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def configure() -> ControllerConfig:  # once the controller is imported
        from tensorfleet_desktop.controller.app import ControllerConfig

        return ControllerConfig(
            data_dir=data_dir,
            host=args.host,
            port=args.port,
            interfaces=interfaces,
            mdns=not args.no_mdns,
            local_agent=not args.no_local_agent,
            local_agent_slots=args.local_agent_slots,
            local_agent_metrics_port=args.local_agent_metrics_port,
            agents=args.agent,
            store_uri=args.store or env_store or settings.store_uri,
            blobs_uri=args.blobs or settings.blobs_uri,
            s3_credentials=(settings.s3_access_key, settings.s3_secret_key),
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            prometheus_sd=args.prometheus_sd,
            telemetry_period=args.telemetry_period,
            gang_reserve_after=args.gang_reserve_after,
            keep_checkpoints=args.keep_checkpoints,
            ready_file=args.ready_file,
            insecure=args.insecure,
            cluster_token=os.environ.get("TENSORFLEET_CLUSTER_TOKEN", ""),
            client_token=os.environ.get("TENSORFLEET_CONTROLLER_TOKEN", ""),
            http_port=args.http_port if args.http_port is not None else settings.http_port,
            http_host=args.http_host or settings.http_host,
            peer_transfer=settings.peer_transfer and not args.no_peer_transfer,
            wake_timeout=args.wake_timeout,
            fair_share=settings.fair_share,
            fair_share_half_life=settings.fair_share_half_life,
            preempt_grace=settings.preempt_grace,
        )

    from tensorfleet_desktop.controller.local_agent import LocalAgent
    from tensorfleet_desktop.controller.settings import claim_data_dir

    try:
        lock = claim_data_dir(data_dir)
    except (RuntimeError, OSError) as exc:  # the data dir in use, or another user's
        guard_secrets()
        return _cannot_start(exc, exit_codes.JOB_FAILED)
    local_agent: LocalAgent | None = None
    if not args.no_local_agent:
        local_agent = LocalAgent(data_dir, args.local_agent_slots, args.local_agent_metrics_port, args.insecure)
        try:  # before asyncio and the controller are imported; else the start waits for the dir's last agent
            local_agent.spawn_if_free()
        except OSError as exc:
            guard_secrets()
            lock.release()
            return _cannot_start(exc, exit_codes.JOB_FAILED)
    guard_secrets()
    import asyncio

    async def main() -> int:
        from tensorfleet_desktop.controller.app import ControllerApp

        app = ControllerApp(configure(), lock=lock, local_agent=local_agent)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, app.request_stop)
        # rich (what serve prints with) is imported beside the start, not after it on the loop pairing the agent
        output = asyncio.create_task(asyncio.to_thread(importlib.import_module, "tensorfleet_desktop.cli.output"))
        try:
            await app.start()
        except ValueError as exc:  # configuration: a bad URI, an unreachable store, a missing driver
            lock.release()
            return _cannot_start(exc, exit_codes.USAGE)
        except (RuntimeError, OSError) as exc:  # the data dir in use, a port taken
            lock.release()
            return _cannot_start(exc, exit_codes.JOB_FAILED)
        collector.settle()  # its jobs are loaded: what it holds now is not scanned again (collector.py)
        err = (await output).err
        http = f", HTTP API on {app.http_url}" if app.http_url else ""
        if app.http_pin:  # HTTPS with a self-signed certificate: what curl pins (see the log for --cacert)
            http += f" (curl --pinnedpubkey '{app.http_pin}' -k)"
        err.print(f"TensorFleet controller on {app.address}{http} (data in {app.config.data_dir}); Ctrl-C stops it")
        await app.stopped.wait()
        await app.stop()
        return exit_codes.OK

    return asyncio.run(main())


def _cannot_start(exc: Exception, code: int) -> int:
    from tensorfleet_desktop.cli.output import err

    err.print(f"tensorfleet serve: cannot start: {exc}", soft_wrap=True, markup=False)
    return code


def _guard_secrets(flag_store: str, store: str, settings: Any, config_path: Path) -> None:
    """Mask the store password and S3 keys in every log line; warn when the password came on the command line,
    where every user of this machine can read it (`ps`)."""
    from tensorfleet_agent.security.secrets import register
    from tensorfleet_desktop.controller.store.base import uri_password

    if uri_password(flag_store):
        from tensorfleet_desktop.cli.output import err

        err.print(
            f"tensorfleet serve: warning: the password in --store shows in `ps` to every user of this machine; "
            f"put the URI under [store] in {config_path} (chmod 600) or in TENSORFLEET_MONGODB_URI",
            soft_wrap=True,
            markup=False,
        )
    for secret in (uri_password(store), settings.s3_access_key, settings.s3_secret_key):
        register(secret)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        register(os.environ.get(name, ""))


def shutdown(client: Client, args: argparse.Namespace) -> int:
    from tensorfleet_desktop.cli.output import err

    client.shutdown()
    err.print(f"asked the controller at {client.address} to stop")
    return exit_codes.OK


def gc(client: Client, args: argparse.Namespace) -> int:
    from tensorfleet_desktop.cli.output import out, print_json

    freed = client.collect_garbage(args.grace)
    if args.json:
        print_json(freed)
    else:
        out.print(
            f"deleted {freed['deleted']} blob(s), removed {freed['partials']} partial transfer file(s), "
            f"freed {freed['freed_bytes'] / 2**20:.1f} MiB; {freed['kept']} kept"
        )
    return exit_codes.OK
