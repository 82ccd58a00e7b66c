"""`tensorfleet agents`: list the agents; add, pair, drain or remove one. And `tensorfleet algorithms`: what the
agents can run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, err, out, print_json, print_table
from tensorfleet_desktop.client import Client

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


def add_algorithms_parser(sub: Any) -> None:
    s = sub.add_parser("algorithms", help="the workloads and their parameters")
    s.set_defaults(call=algorithms)
    add_format_flags(s, csv=True)


def summary(agent: dict[str, Any]) -> dict[str, Any]:
    # metrics_port: where Prometheus scrapes the agent on its host (0: none; refused services have none)
    return {**{k: agent[k] for k in SUMMARY_KEYS}, "metrics_port": agent.get("metrics_port", 0)}


def agents(client: Client, args: argparse.Namespace) -> int:
    action = args.agents_command
    if action is None:
        return _list(client, args)
    if action == "add":
        agent = client.add_agent(args.address)
    elif action == "pair":
        agent = client.pair_agent(args.agent, args.token, args.force)
    elif action == "drain":
        agent = client.drain_agent(args.agent)
    else:
        agent = client.remove_agent(args.agent)
    if args.json:
        print_json(summary(agent))
    else:
        out.print(f"{action}: {agent['name']} ({agent['id']}) at {agent['address']}: {agent['state']}")
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
            csv_of(rows, [*SUMMARY_KEYS, "metrics_port", *(["refused"] if args.all else [])])
        return exit_codes.OK
    print_table(
        ("ID", "NAME", "ADDRESS", "STATE", "PAIRED", "SOURCE", "SLOTS", "GPUS", "CPU", "FINGERPRINT"),
        (
            (
                a["id"][:12],
                a["name"],
                a["address"],
                a["state"],
                "-" if "refused" in a else "yes" if a["paired"] else "NO",
                a["source"],
                f"{a['slots_free']}/{a['slots_total']}",
                str(a["gpus"]),
                f"{a.get('cpu_percent', 0):.0f}%",
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
