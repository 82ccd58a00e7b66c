"""`tensorfleet pools`: capacity beyond the LAN. `pools add slurm NAME --partition P ...` registers a Slurm
partition the controller allocates nodes from when queued work cannot be placed on the LAN agents (or names the
pool); `pools list|show|remove`; `pools credential NAME --ttl 30d` prints a join credential for agents that join
from outside mDNS's reach (Kubernetes). The flags are checked here, so a mistake names its flag before anything is sent;
the controller checks them again (the SDK and the GUI reach it without this module)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, err, out, print_json, print_table, when
from tensorfleet_desktop.client import Client

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # as controller.proto's Pool.name says
# Slurm's --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (sbatch(1)); UNLIMITED / INFINITE
SLURM_TIME = re.compile(
    r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(?::\d{1,2}(?::\d{1,2})?)?|UNLIMITED|INFINITE)$"
)
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LOGIN = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(?::\d{1,5})?$")
DEFAULT_IDLE = "5m"
SUMMARY_KEYS = ("name", "kind", "partition", "account", "max_nodes", "time_limit", "idle_timeout_seconds", "login")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "pools",
        help="Slurm pools the controller allocates nodes from when the LAN is full",
        description="Pools are capacity beyond the LAN: the controller submits a Slurm allocation whose nodes run "
        "tensorfleet-agent and join it, runs the waiting work there, and lets the allocation end once its agents "
        "are idle (the pool scales back to zero).",
    )
    s.set_defaults(call=pools)
    add_format_flags(s, csv=True)
    psub = s.add_subparsers(dest="pools_command", metavar="ACTION", parser_class=type(s))
    add_format_flags(psub.add_parser("list", help="the pools and their allocations (the default)"), csv=True)
    a = psub.add_parser("add", help="register a pool: `pools add slurm NAME --partition P`")
    kinds = a.add_subparsers(dest="kind", metavar="KIND", parser_class=type(s), required=True)
    k = kinds.add_parser(
        "slurm",
        help="a Slurm partition (sbatch/squeue/scancel/sacct here, or over ssh on --login)",
        description="The controller runs sbatch, squeue, scancel and sacct on its own machine, or over ssh on "
        "--login; the allocated nodes must reach the controller's address and run tensorfleet-agent.",
    )
    k.add_argument(
        "name",
        type=POOL_NAME,
        metavar="NAME",
        help="the pool's name: lowercase letters, digits, '.', '_' and '-' (up to 63)",
    )
    k.add_argument("--partition", required=True, type=PARTITION, help="the Slurm partition (sbatch --partition)")
    k.add_argument("--account", default="", help="the Slurm account (sbatch --account)")
    k.add_argument("--max-nodes", type=MAX_NODES, default=1, metavar="N", help="nodes allocated at once, at most (1)")
    k.add_argument(
        "--time",
        type=TIME_LIMIT,
        metavar="LIMIT",
        help="each allocation's time limit, Slurm's format (e.g. 4:00:00)",
    )
    k.add_argument(
        "--sbatch-arg",
        action="append",
        type=SBATCH_ARG,
        default=[],
        metavar="ARG",
        help="one more sbatch argument, as one word (repeatable; e.g. --sbatch-arg=--gres=gpu:1)",
    )
    k.add_argument(
        "--idle-timeout",
        default=DEFAULT_IDLE,
        type=IDLE_TIMEOUT,
        metavar="DURATION",
        help=f"an allocation's agents exit after this long without work, ending it (30s, 5m, 1h; {DEFAULT_IDLE})",
    )
    k.add_argument("--login", type=LOGIN_HOST, metavar="USER@HOST", help="run Slurm's commands over ssh on this host")
    add_format_flags(k)
    a = psub.add_parser(
        "credential",
        help="print a long-lived join credential for agents outside mDNS's reach (a Kubernetes Secret)",
        description="Agents started with `tensorfleet-agent --join HOST:PORT --join-credential-file FILE` (or "
        "$TENSORFLEET_JOIN_CREDENTIAL) join this controller with it and get the label pool=NAME. Only the "
        "credential goes to stdout: kubectl create secret generic tensorfleet-join --from-literal=credential=$(...)",
    )
    a.add_argument("name", type=POOL_NAME, metavar="NAME", help="the pool the agents join as (label pool=NAME)")
    a.add_argument("--ttl", type=TTL, default="30d", metavar="DURATION", help="how long it stays valid (30d, 12h; 30d)")
    add_format_flags(a)
    for action, text in (("show", "one pool and its allocations"), ("remove", "forget a pool (none of it running)")):
        a = psub.add_parser(action, help=text)
        a.add_argument("name")
        add_format_flags(a)


def _checked(check: Callable[[str], Any], must: str) -> Callable[[str], Any]:
    """An argparse type: a refused value ends the command with 'argument --FLAG: must ..., got VALUE' before
    anything connects."""

    def parse(text: str) -> Any:
        value = check(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {must}, got {text!r}")
        return value

    parse.__name__ = must  # what argparse names the type in its own messages
    return parse


def duration_seconds(text: str) -> float | None:
    """'90', '90s', '5m', '1.5h', '1d' -> seconds above zero; None for anything else."""
    match = DURATION.match(text.strip().lower())
    seconds = float(match[1]) * UNIT_SECONDS[match[2] or "s"] if match else 0.0
    return seconds if seconds > 0 else None


def _positive(text: str) -> int | None:
    return int(text) if text.strip().isdigit() and int(text) >= 1 else None


def _match(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    return lambda text: text if pattern.match(text) else None


POOL_NAME = _checked(_match(NAME), "1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
PARTITION = _checked(_match(re.compile(r"^[^\s,]+$")), "one Slurm partition name")
MAX_NODES = _checked(_positive, "a whole number of nodes, 1 or more")
TIME_LIMIT = _checked(_match(SLURM_TIME), "in Slurm's format (MM, HH:MM:SS, D-HH, D-HH:MM:SS, UNLIMITED)")
SBATCH_ARG = _checked(_match(re.compile(r"^-\S")), "one sbatch option such as --sbatch-arg=--gres=gpu:1")
IDLE_TIMEOUT = _checked(duration_seconds, "a duration above zero such as 30s, 5m or 1h")
TTL = _checked(duration_seconds, "a duration above zero such as 12h or 30d")
LOGIN_HOST = _checked(_match(LOGIN), "USER@HOST or HOST")


def pool_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The add command's flags (each already checked by its argparse type) as AddPool's fields."""
    return {
        "name": args.name,
        "kind": args.kind,
        "partition": args.partition,
        "account": args.account,
        "max_nodes": args.max_nodes,
        "time_limit": args.time or "",
        "sbatch_args": list(args.sbatch_arg),
        "idle_timeout_seconds": args.idle_timeout,
        "login": args.login or "",
    }


def pools(client: Client, args: argparse.Namespace) -> int:
    action = args.pools_command or "list"
    if action == "list":
        return _list(client.list_pools(), args)
    if action == "credential":
        made = client.create_join_credential(args.name, args.ttl)
        if args.json:
            print_json(made)
        else:
            out.print(made["credential"], markup=False, soft_wrap=True)
            err.print(f"join credential for pool {made['pool']}, valid until {when(made['expires_at'])}", markup=False)
        return exit_codes.OK
    if action == "add":
        spec = pool_spec(args)
        pool = client.add_pool(spec.pop("name"), spec.pop("partition"), **spec)
        verb = "added"
    elif action == "show":
        pool = client.get_pool(args.name)
        verb = ""
    else:
        pool = client.remove_pool(args.name)
        verb = "removed"
    if args.json:
        print_json(pool)
        return exit_codes.OK
    if verb:
        out.print(f"{verb} pool {pool['name']} ({_where(pool)})", markup=False)
    else:
        _show(pool)
    return exit_codes.OK


def _where(pool: dict[str, Any]) -> str:
    parts = [f"{pool['kind']} partition {pool['partition']}"]
    if pool["account"]:
        parts.append(f"account {pool['account']}")
    if pool["login"]:
        parts.append(f"via {pool['login']}")
    parts.append(f"up to {pool['max_nodes']} node(s)")
    return ", ".join(parts)


def _idle(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _list(items: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.json:
        print_json(items)
        return exit_codes.OK
    if args.csv:
        csv_of([{**{k: p[k] for k in SUMMARY_KEYS}, "allocations": len(p["allocations"])} for p in items],
               (*SUMMARY_KEYS, "allocations"))  # fmt: skip
        return exit_codes.OK
    print_table(
        ("NAME", "KIND", "PARTITION", "NODES", "ALLOCATIONS", "TIME", "IDLE", "LOGIN"),
        (
            (
                p["name"],
                p["kind"],
                p["partition"] + (f" ({p['account']})" if p["account"] else ""),
                f"{sum(a['nodes'] for a in p['allocations'])}/{p['max_nodes']}",
                ", ".join(f"{a['id']} {a['state']}" for a in p["allocations"]) or "-",
                p["time_limit"] or "-",
                _idle(p["idle_timeout_seconds"]),
                p["login"] or "-",
            )
            for p in items
        ),
    )
    for p in items:
        if p["error"]:
            err.print(f"{p['name']}: {p['error']}", style="yellow", markup=False)
    if not items:
        err.print("no pools: add one with `tensorfleet pools add slurm NAME --partition P`", markup=False)
    return exit_codes.OK


def _show(pool: dict[str, Any]) -> None:
    out.print(f"pool {pool['name']}: {_where(pool)}", markup=False)
    out.print(
        f"  time limit {pool['time_limit'] or 'the partition default'}, agents exit after "
        f"{_idle(pool['idle_timeout_seconds'])} idle; created {when(pool['created_at'])}",
        markup=False,
    )
    if pool["sbatch_args"]:
        out.print(f"  sbatch {' '.join(pool['sbatch_args'])}", markup=False)
    if pool["error"]:
        err.print(f"  {pool['error']}", style="yellow", markup=False)
    if not pool["allocations"]:
        out.print("  no allocation (scaled to zero)", markup=False)
        return
    print_table(
        ("ALLOCATION", "STATE", "REASON", "NODES", "SUBMITTED", "STARTED", "AGENTS", "JOBS"),
        (
            (
                a["id"],
                a["state"],
                a["reason"] or "-",
                str(a["nodes"]),
                when(a["submitted_at"]),
                when(a["started_at"]),
                ", ".join(x[:12] for x in a["agents"]) or "-",
                ", ".join(j[:12] for j in a["jobs"]) or "-",
            )
            for a in pool["allocations"]
        ),
    )
