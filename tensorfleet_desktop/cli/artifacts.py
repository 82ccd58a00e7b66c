"""`tensorfleet artifacts JOB` and `tensorfleet artifacts download JOB NAME`: the files a job's tasks saved."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import (
    add_format_flags,
    csv_of,
    human_size,
    out,
    print_json,
    print_table,
    when,
)
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.display import printable

LIST_USAGE = "tensorfleet artifacts JOB [--json | --csv]"
CSV_FIELDS = ("name", "kind", "step", "task_index", "attempt", "size", "sha256", "created_at")
DOWNLOAD_USAGE = "tensorfleet artifacts download JOB NAME [-o PATH] [--task N] [--attempt N] [--json]"


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "artifacts",
        help="a job's files (models, reports, checkpoints, what scripts saved); download one, sha256 checked",
        usage=f"{LIST_USAGE}\n       {DOWNLOAD_USAGE}",
        description="List the files a job's tasks saved, or download one of them (its sha256 is checked).",
    )
    s.set_defaults(call=artifacts)
    s.add_argument("words", nargs="+", metavar="JOB | download JOB NAME", help=argparse.SUPPRESS)
    s.add_argument("-o", "--output", type=Path, help="download: the file or directory to write (default: NAME, here)")
    s.add_argument("--task", type=int, metavar="N", help="download: task N's artifact, when several saved one by NAME")
    s.add_argument(
        "--attempt", type=int, metavar="N", help="download: attempt N's file of NAME (default: the latest attempt's)"
    )
    add_format_flags(s, csv=True)


def artifacts(client: Client, args: argparse.Namespace) -> int:
    words = args.words
    if words[0] == "download":
        if len(words) != 3:
            raise UsageError(f"usage: {DOWNLOAD_USAGE}")
        return _download(client, words[1], words[2], args)
    if len(words) != 1:
        raise UsageError(f"usage: {LIST_USAGE}, or {DOWNLOAD_USAGE}")
    if args.output is not None or args.task is not None or args.attempt is not None:
        raise UsageError("-o, --task and --attempt go with `tensorfleet artifacts download JOB NAME`")
    items = client.artifacts(words[0])
    if args.json:
        print_json(items)
    elif args.csv:
        csv_of(items, CSV_FIELDS)
    else:
        print_table(
            ("NAME", "KIND", "TASK", "ATTEMPT", "SIZE", "SHA256", "CREATED"),
            (
                (
                    a["name"],  # print_table shows a control character as its escape (printable)
                    _kind(a),
                    _task(a["task_index"]),
                    _attempt(a.get("attempt", 0)),
                    human_size(a["size"]),
                    a["sha256"],
                    when(a["created_at"]),
                )
                for a in items
            ),
        )
    return exit_codes.OK


def _download(client: Client, job_id: str, name: str, args: argparse.Namespace) -> int:
    saved = [a for a in client.artifacts(job_id) if a["name"] == name]  # which ones, before any transfer
    tasks = sorted({a["task_index"] for a in saved})
    if args.task is None and len(tasks) > 1:
        which = ", ".join(_task(t) for t in tasks)
        raise UsageError(f"tasks {which} of job {job_id} each saved {printable(name)!r}: add --task N to pick one")
    attempts = sorted({a.get("attempt", 0) for a in saved if args.task in (None, a["task_index"])})
    dest = args.output if args.output is not None else Path(Path(name).name)
    record = client.download_artifact(job_id, name, dest, args.task, args.attempt)
    if args.json:
        print_json(record)
        return exit_codes.OK
    attempt = record.get("attempt", 0)
    which = f" of attempt {attempt}" if attempt else ""
    if args.attempt is None and len(attempts) > 1:
        which += f" (the latest of attempts {', '.join(map(str, attempts))}; --attempt N for another)"
    out.print(
        f"wrote {printable(record['name'])}{which} ({human_size(record['size'])}, sha256 {record['sha256']} "
        f"verified) to {printable(record['path'])}",
        markup=False,
    )
    return exit_codes.OK


def _attempt(number: int) -> str:
    return str(number) if number else "-"  # 0: the controller's own, or recorded before attempts were


def _kind(artifact: dict[str, Any]) -> str:
    return f"{artifact['kind']} (step {artifact['step']})" if artifact["kind"] == "checkpoint" else artifact["kind"]


def _task(index: int) -> str:
    return "controller" if index < 0 else str(index)
