"""`tensorfleet quota` (issue 24): per-user limits and where everyone stands in the fair share.

`quota set USER gpus=4 tasks=8 queued=50` sets the limits named (the others stay; `none` removes one), `quota clear
USER` removes them all, `quota list [--json|--csv]` shows each user's limits beside what they run now, their queued
jobs, their decayed usage and their share of it. Setting is for admins; a job over quota waits, saying why."""

from __future__ import annotations

import argparse
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, out, print_json, print_table
from tensorfleet_desktop.client import Client

LIMITS = ("gpus", "tasks", "queued")
NO_LIMIT = -1
ROW_FIELDS = ("user", "gpus", "tasks", "queued", "running_tasks", "running_gpus", "queued_jobs", "usage", "share")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "quota",
        help="per-user quotas (running GPUs, running tasks, queued jobs) and the fair share",
        description="A user's jobs over their quota wait in the queue with the reason shown; they never fail. "
        "Among jobs of equal priority the queue goes by each user's recent usage (GPU-seconds, slot-seconds for "
        "CPU tasks, halving every [scheduler] fair_share_half_life), so nobody's 500 trials starve a colleague.",
    )
    s.set_defaults(call=quota)
    add_format_flags(s, csv=True)
    qsub = s.add_subparsers(dest="quota_command", metavar="ACTION", parser_class=type(s))
    add_format_flags(qsub.add_parser("list", help="limits beside usage now (the default)"), csv=True)
    q = qsub.add_parser(
        "set",
        help="set limits: `quota set alice gpus=4 tasks=8 queued=50` (admin; `none` removes a limit)",
        description="Sets the limits named; the others stay. gpus: whole GPUs the user's running tasks may hold "
        "(a task sharing a GPU counts its fraction of one against it, so gpus=1 holds two halves); tasks: tasks "
        "running at once; queued: jobs waiting to start (more wait behind them). A value of `none` removes that "
        "limit.",
    )
    q.add_argument("user", metavar="USER")
    q.add_argument(
        "limits",
        nargs="+",
        type=limit_arg,
        metavar="LIMIT=N",
        help="gpus=N, tasks=N, queued=N (whole numbers) or =none",
    )
    add_format_flags(q)
    c = qsub.add_parser("clear", help="remove every limit of a user (admin)")
    c.add_argument("user", metavar="USER")
    add_format_flags(c)


def limit_arg(text: str) -> tuple[str, int]:
    """`gpus=4` -> ("gpus", 4); `tasks=none` -> ("tasks", -1)."""
    name, sep, value = text.partition("=")
    name, value = name.strip().lower(), value.strip().lower()
    if not sep or name not in LIMITS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected gpus=N, tasks=N or queued=N (N a count, or none)")
    if value in ("none", "-1"):
        return name, NO_LIMIT
    if not (value.isascii() and value.isdigit()):  # str.isdigit alone takes "²", which int() refuses
        whole = " (whole GPUs: a task sharing a GPU counts its fraction against it)" if name == "gpus" else ""
        raise argparse.ArgumentTypeError(f"{text!r}: {name} must be a whole number >= 0, or none{whole}")
    return name, int(value)


def quota(client: Client, args: argparse.Namespace) -> int:
    action = args.quota_command or "list"
    if action == "list":
        return _list(client.list_quotas(), args)
    if action == "clear":
        done = client.set_quota(args.user, gpus=NO_LIMIT, tasks=NO_LIMIT, queued=NO_LIMIT)
        verb = "cleared"
    else:
        limits = dict(args.limits)
        if len(limits) != len(args.limits):
            raise UsageError("name each limit once (gpus=, tasks=, queued=)")
        done = client.set_quota(args.user, **limits)
        verb = "set"
    if args.json:
        print_json(done)
    else:
        out.print(f"quota {verb} for {done['user']}: {describe(done)}", markup=False)
    return exit_codes.OK


def describe(limits: dict[str, Any]) -> str:
    return " ".join(f"{k}={limits[k]}" for k in LIMITS if limits.get(k, NO_LIMIT) >= 0) or "no limit"


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per user with a quota or any usage: their limits (-1: none) beside their usage now."""
    quotas = {q["user"]: q for q in report["quotas"]}
    usage = {u["user"]: u for u in report["usage"]}
    empty = {"running_tasks": 0, "running_gpus": 0.0, "queued_jobs": 0, "usage": 0.0, "share": 0.0}
    return [
        {
            "user": user,
            **{k: quotas.get(user, {}).get(k, NO_LIMIT) for k in LIMITS},
            **{k: usage.get(user, empty).get(k, v) for k, v in empty.items()},
        }
        for user in sorted(quotas.keys() | usage.keys())
    ]


def _list(report: dict[str, Any], args: argparse.Namespace) -> int:
    table = rows(report)
    if args.json:
        print_json({"users": table, "half_life_seconds": report["half_life_seconds"]})
        return exit_codes.OK
    if getattr(args, "csv", False):
        csv_of(table, ROW_FIELDS)
        return exit_codes.OK

    def limit(value: int) -> str:
        return "-" if value < 0 else str(value)

    print_table(
        ["USER", "GPUS", "TASKS", "QUEUED", "RUNNING", "GPUS NOW", "WAITING", "USAGE (GPU·s, CPU slot·s)", "SHARE"],
        (
            [
                r["user"],
                limit(r["gpus"]),
                limit(r["tasks"]),
                limit(r["queued"]),
                str(r["running_tasks"]),
                f"{r['running_gpus']:g}",
                str(r["queued_jobs"]),
                f"{r['usage']:.0f}",
                f"{r['share']:.0%}",
            ]
            for r in table
        ),
        title=f"quotas and fair share (usage halves every {report['half_life_seconds'] / 3600:g} h)",
    )
    return exit_codes.OK
