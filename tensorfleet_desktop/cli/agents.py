"""`tensorfleet agents`: list the agents; show, add, pair, drain, wake (Wake-on-LAN) or remove one; list or prune the
project environments an agent keeps (`agents envs AGENT [--prune [--keep-gb N]]`); show its blob cache and dataset
versions (`agents cache AGENT`). And `tensorfleet algorithms`: what the agents can run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import (
    add_format_flags,
    csv_of,
    err,
    human_size,
    out,
    print_json,
    print_table,
    when,
)
from tensorfleet_desktop.client import Client

ENV_FIELDS = ("key", "size", "last_used", "jobs", "python", "source", "build_seconds", "in_use")
TREE_FIELDS = ("name", "version", "content_id", "bytes", "files", "last_used", "in_use")
GIB = 1 << 30

SUMMARY_KEYS = (
    "id",
    "name",
    "address",
    "state",
    "source",
    "paired",
    "slots_total",
    "slots_free",
    "gpus",
    "labels",
    "last_seen",
    "state_since",
    "fingerprint",
    "cluster_id",
    "error",
)
#: Desk mode and Wake-on-LAN (issue 23); absent from refused services, so read with defaults.
POWER_KEYS: dict[str, Any] = {"desk": None, "interfaces": [], "wake_count": 0, "last_wake_at": 0.0}


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("agents", help="list agents; add, drain or remove one")
    s.set_defaults(call=agents)
    add_format_flags(s, csv=True)
    s.add_argument("--all", action="store_true", help="also list the services this controller refuses, and why")
    asub = s.add_subparsers(dest="agents_command", metavar="ACTION", parser_class=type(s))
    a = asub.add_parser("add", help="add an agent by HOST:PORT")
    a.add_argument("address")
    add_format_flags(a)
    a = asub.add_parser("pair", help="pair with an agent using the join token it printed")
    a.add_argument("agent", help="id, id prefix or name")
    a.add_argument("--token", required=True, help="join token (`tensorfleet-agent token` prints a new one)")
    a.add_argument("--force", action="store_true", help="accept a changed agent certificate (deliberate re-pair)")
    add_format_flags(a)
    for name in ("drain", "rm"):
        a = asub.add_parser(name, help=f"{name} an agent by id or name")
        a.add_argument("agent")
        add_format_flags(a)
    a = asub.add_parser("show", help="one agent: state, desk mode, interfaces (MAC, Wake-on-LAN), wake-ups")
    a.add_argument("agent", help="id, id prefix or name")
    add_format_flags(a)
    a = asub.add_parser(
        "wake",
        help="wake a sleeping agent's machine (Wake-on-LAN magic packet)",
        description="Send the agent's machine a Wake-on-LAN magic packet on each of its subnets: by the controller "
        "where it has an address there, else relayed by an online agent on that subnet. The agent is WAKING until it "
        "answers (ONLINE), or SLEEPING again after the controller's --wake-timeout.",
    )
    a.add_argument("agent", help="id, id prefix or name")
    add_format_flags(a)
    a = asub.add_parser(
        "envs",
        help="the project environments an agent keeps (most recently used first); --prune removes unused ones",
        description="List the Python environments an agent built for project jobs, or remove those no running "
        "task uses (least recently used first) with --prune. The agent evicts beyond --env-cache-gb on its own.",
    )
    a.add_argument("agent", help="id, id prefix or name")
    a.add_argument("--prune", action="store_true", help="remove environments no running task uses")
    a.add_argument(
        "--keep-gb", type=float, metavar="N", help="with --prune: keep the most recently used up to N GiB (default 0)"
    )
    add_format_flags(a, csv=True)
    a = asub.add_parser(
        "cache",
        help="an agent's blob cache and the dataset versions materialized there",
        description="What an agent's blob cache holds (blobs, bytes, its --blob-cache-gb limit) and the dataset "
        "versions laid out from it (most recently used first). It evicts least recently used beyond its limit.",
    )
    a.add_argument("agent", help="id, id prefix or name")
    add_format_flags(a, csv=True)


def add_algorithms_parser(sub: Any) -> None:
    s = sub.add_parser("algorithms", help="the workloads and their parameters")
    s.set_defaults(call=algorithms)
    add_format_flags(s, csv=True)


def summary(agent: dict[str, Any]) -> dict[str, Any]:
    # metrics_port: where Prometheus scrapes the agent on its host (0: none; refused services have none)
    return {
        **{k: agent[k] for k in SUMMARY_KEYS},
        "metrics_port": agent.get("metrics_port", 0),
        **{k: agent.get(k, default) for k, default in POWER_KEYS.items()},
    }


def wol(agent: dict[str, Any]) -> str:
    """The WOL column: on (a NIC wakes on a magic packet), off/unknown, or - (no MAC known)."""
    interfaces = agent.get("interfaces") or []
    if not interfaces:
        return "-"
    return "on" if any(i["wake_on_lan"] for i in interfaces) else "off"


def agents(client: Client, args: argparse.Namespace) -> int:
    action = args.agents_command
    if action is None:
        return _list(client, args)
    if action == "envs":
        return envs(client, args)
    if action == "cache":
        return cache(client, args)
    if action == "show":
        return show(client, args)
    if action == "add":
        agent = client.add_agent(args.address)
    elif action == "pair":
        agent = client.pair_agent(args.agent, args.token, args.force)
    elif action == "drain":
        agent = client.drain_agent(args.agent)
    elif action == "wake":
        agent = client.wake_agent(args.agent)
    else:
        agent = client.remove_agent(args.agent)
    if args.json:
        print_json(summary(agent))
    else:
        out.print(f"{action}: {agent['name']} ({agent['id']}) at {agent['address']}: {agent['state']}", markup=False)
    return exit_codes.OK


def show(client: Client, args: argparse.Namespace) -> int:
    """One agent in full: the summary, then desk mode, interfaces and wake-ups."""
    agent = next((a for a in client.agents() if a["id"] == args.agent), None)
    if agent is None:  # the controller resolves prefixes and names the same way for every command
        hits = [a for a in client.agents() if a["name"] == args.agent or a["id"].startswith(args.agent)]
        if len(hits) != 1:
            known = ", ".join(f"{a['name']} ({a['id'][:12]})" for a in hits) or "none"
            raise UsageError(f"{args.agent!r} matches {len(hits)} agents (matches: {known}); use an id")
        agent = hits[0]
    if args.json:
        print_json(
            {
                **summary(agent),
                "hostname": agent.get("hostname", ""),
                "workloads": agent.get("workloads", []),
                "gpu_stats": agent.get("gpu_stats", []),
            }
        )
        return exit_codes.OK
    lines = [
        f"{agent['name']} ({agent['id']})",
        f"  address: {agent['address']} ({agent['source']}), state {agent['state']} since {when(agent['state_since'])}",
        f"  slots: {agent['slots_free']}/{agent['slots_total']} free, GPUs: {agent['gpus']}",
        *(f"  {gpu_line(g)}" for g in agent.get("gpu_stats") or []),
    ]
    desk = agent.get("desk")
    if desk:
        lending = "not lending" if desk["owner_active"] or desk["paused"] else "lending"
        extra = f", hours {desk['schedule']}" if desk["schedule"] else ""
        lines.append(f"  desk mode: {lending}{' (paused)' if desk['paused'] else ''}: {desk['reason'] or '-'}{extra}")
    for i in agent.get("interfaces") or []:
        source = f" ({i['wake_on_lan_source']})" if i["wake_on_lan_source"] else ""
        address = f"{i['ipv4']}/{i['prefix_length']}" if i["ipv4"] else "no IPv4"
        lines.append(
            f"  interface {i['name']}: {i['mac']}, {address}, Wake-on-LAN {'on' if i['wake_on_lan'] else 'off'}"
            + source
        )
    if agent.get("last_wake_at"):
        lines.append(f"  wake-ups: {agent.get('wake_count', 0)}, last magic packet {when(agent['last_wake_at'])}")
    if agent["error"]:
        lines.append(f"  {agent['error']}")
    out.print("\n".join(lines), markup=False)
    return exit_codes.OK


def _list(client: Client, args: argparse.Namespace) -> int:
    everything = client.agents(all=True)
    items = everything if args.all else [a for a in everything if "refused" not in a]
    if args.json or args.csv:
        rows = [summary(a) for a in items]
        if args.all:  # every row says whether it is refused, and why
            rows = [{**row, "refused": a.get("refused", "")} for row, a in zip(rows, items, strict=True)]
        if args.json:
            print_json(rows)
        else:
            csv_of(rows, [*SUMMARY_KEYS, "metrics_port", "wake_count", *(["refused"] if args.all else [])])
        return exit_codes.OK
    print_table(
        ("ID", "NAME", "ADDRESS", "STATE", "PAIRED", "SOURCE", "SLOTS", "GPUS", "CPU", "WOL", "WAKES", "FINGERPRINT"),
        (
            (
                a["id"][:12],
                a["name"],
                a["address"],
                a["state"],
                "-" if "refused" in a else "yes" if a["paired"] else "NO",
                a["source"],
                f"{a['slots_free']}/{a['slots_total']}",
                gpus_cell(a),
                f"{a.get('cpu_percent', 0):.0f}%",
                wol(a),
                str(a.get("wake_count", 0)),
                a["fingerprint"][:16],
            )
            for a in items
        ),
    )
    for a in items:
        if a["error"]:
            err.print(f"{a['name'] or a['id'][:12]}: {a['error']}", style="yellow", markup=False)
    hidden = len(everything) - len(items)
    if hidden:
        plural = "s" if hidden > 1 else ""
        err.print(f"{hidden} refused service{plural}: see `tensorfleet agents --all`", markup=False)
    return exit_codes.OK


def gpu_line(g: dict[str, Any]) -> str:
    """One GPU: memory used of its total, and who has it: tasks sharing it (what they were promised), or one whole."""
    line = f"GPU {g['index']}: {human_size(g['memory_used_bytes'])} of {human_size(g['memory_total_bytes'])} used"
    if g.get("shared_tasks"):
        tasks = g["shared_tasks"]
        line += f", {human_size(g['memory_reserved_bytes'])} promised to {tasks} sharing task{'s' if tasks > 1 else ''}"
    elif g.get("exclusive"):
        line += ", held whole by a task"
    return line


def gpus_cell(a: dict[str, Any]) -> str:
    """The GPUS column: how many, and how many tasks share them by memory now."""
    sharing = sum(g.get("shared_tasks", 0) for g in a.get("gpu_stats") or [])
    return f"{a['gpus']} ({sharing} sharing)" if sharing else str(a["gpus"])


def algorithms(client: Client, args: argparse.Namespace) -> int:
    items = client.workloads()
    if args.json:
        print_json(items)
        return exit_codes.OK
    if args.csv:  # one row per workload; its parameters as JSON
        csv_of(items, ("name", "category", "summary", "datasets", "params"))
        return exit_codes.OK
    for w in items:
        out.print(f"[bold]{w['name']}[/bold] ({w['category']}): {w['summary']}")
        if w["datasets"]:
            out.print(f"  datasets: {', '.join(w['datasets'])}")
        for p in w["params"]:
            bounds = f" one of {p['choices']}" if p["choices"] else ""
            out.print(f"  {p['name']}: {p['type']} = {json.dumps(p['default'])}{bounds}  {p['help']}")
    return exit_codes.OK


def envs(client: Client, args: argparse.Namespace) -> int:
    if args.keep_gb is not None and not args.prune:
        raise UsageError("--keep-gb goes with --prune: tensorfleet agents envs AGENT --prune --keep-gb N")
    if args.keep_gb is not None and args.keep_gb < 0:
        raise UsageError(f"--keep-gb must be 0 or more, got {args.keep_gb}")
    if args.prune:
        pruned = client.prune_agent_envs(args.agent, keep_bytes=int((args.keep_gb or 0) * GIB))
        if args.json:
            print_json(pruned)
        else:
            removed = pruned["removed"]
            out.print(
                f"removed {len(removed)} environment(s) from {args.agent}, freed {human_size(pruned['freed_bytes'])}"
                + "".join(f"\n  {key[:12]}" for key in removed),
                markup=False,
            )
        return exit_codes.OK
    listed = client.agent_envs(args.agent)
    items: list[dict[str, Any]] = listed["envs"]
    if args.json:
        print_json(listed)
        return exit_codes.OK
    if args.csv:
        csv_of(items, ENV_FIELDS)
        return exit_codes.OK
    print_table(
        ("KEY", "SIZE", "LAST USED", "JOBS", "PYTHON", "SOURCE", "BUILD", "IN USE"),
        (
            (
                e["key"][:12],
                human_size(e["size"]),
                when(e["last_used"]),
                str(e["jobs"]),
                e["python"] or "-",
                e["source"] or "-",
                f"{e['build_seconds']:.1f}s",
                str(e["in_use"]) if e["in_use"] else "-",
            )
            for e in items
        ),
    )
    total = sum(e["size"] for e in items)
    limit = listed.get("limit_bytes")
    err.print(
        f"{len(items)} environment(s), {human_size(total)}"
        + (f" of the {human_size(limit)} the agent keeps (--env-cache-gb)" if limit else ""),
        markup=False,
    )
    return exit_codes.OK


def cache(client: Client, args: argparse.Namespace) -> int:
    listed = client.agent_cache(args.agent)
    trees: list[dict[str, Any]] = sorted(listed["trees"], key=lambda t: -t["last_used"])
    if args.json:
        print_json({**listed, "trees": trees})
        return exit_codes.OK
    if args.csv:
        csv_of(trees, TREE_FIELDS)
        return exit_codes.OK
    print_table(
        ("DATASET", "VERSION", "CONTENT", "SIZE", "FILES", "LAST USED", "IN USE"),
        (
            (
                t["name"] or "-",
                f"v{t['version']}",
                t["content_id"][:12],
                human_size(t["bytes"]),
                str(t["files"]),
                when(t["last_used"]) if t["last_used"] else "-",
                str(t["in_use"]) if t["in_use"] else "-",
            )
            for t in trees
        ),
    )
    limit = listed["limit_bytes"]
    err.print(
        f"{listed['blobs']} blob(s), {human_size(listed['blob_bytes'])}"
        + (f" of the {human_size(limit)} the agent keeps (--blob-cache-gb)" if limit else "")
        + f"; {len(trees)} dataset version(s) laid out",
        markup=False,
    )
    return exit_codes.OK
