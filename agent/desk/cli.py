"""Desk mode on the command line: the agent's --desk flags, and `tensorfleet-agent desk status|pause|resume`."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from tensorfleet_agent.desk.monitor import DeskConfig
from tensorfleet_agent.desk.schedule import Hours
from tensorfleet_agent.runtime.power import parse_duration

_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def add_desk_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--desk",
        action="store_true",
        help="desk mode: lend this workstation only while its owner is away (no keyboard or mouse input, no other "
        "programs on the GPU or CPU); hand it back within 2 s when the owner returns",
    )
    p.add_argument("--desk-idle", default="10m", metavar="DURATION", help="idle time before lending (default: 10m)")
    p.add_argument(
        "--desk-hours", default="", metavar="HH:MM-HH:MM", help="lend only within these local hours, e.g. 19:00-08:00"
    )
    p.add_argument(
        "--desk-gpu-memory",
        default="512MiB",
        metavar="SIZE",
        help="GPU memory held by other programs that means the owner uses the GPU (default: 512MiB)",
    )
    p.add_argument(
        "--desk-cpu-percent",
        type=float,
        default=25.0,
        metavar="PERCENT",
        help="share of the machine's CPU used by other programs that means the owner uses it (default: 25)",
    )
    p.add_argument("--desk-display", default="", metavar="DISPLAY", help="the X display to watch (default: $DISPLAY)")


def desk_config(args: argparse.Namespace) -> DeskConfig | None:
    """The DeskConfig of the parsed flags (None without --desk); ValueError naming the flag otherwise."""
    if not args.desk:
        return None
    idle = parse_duration(args.desk_idle, "--desk-idle")
    if not math.isfinite(args.desk_cpu_percent) or not 0 < args.desk_cpu_percent <= 100:
        raise ValueError(f"--desk-cpu-percent must be between 0 and 100, got {args.desk_cpu_percent:g}")
    return DeskConfig(
        idle_seconds=idle,
        hours=Hours.parse(args.desk_hours) if args.desk_hours else None,
        gpu_memory_bytes=parse_size(args.desk_gpu_memory, "--desk-gpu-memory"),
        cpu_percent=args.desk_cpu_percent,
        display=args.desk_display,
    )


def parse_size(text: str, what: str) -> int:
    """'512MiB', '1G', '300M' or bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{what} must be a size like 512MiB, 1GiB or bytes, got {text!r}")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def desk_command(argv: list[str], default_data_dir: Path) -> int:
    """`tensorfleet-agent desk status|pause|resume`: ask the running agent through its control socket."""
    from tensorfleet_agent.desk.control import ask, socket_path

    p = argparse.ArgumentParser(
        prog="tensorfleet-agent desk",
        description="See or control desk mode of the agent running on this machine: pause = don't lend now "
        "(running tasks are handed back), resume = lend again when the owner is away.",
    )
    p.add_argument("action", choices=("status", "pause", "resume"))
    p.add_argument("--data-dir", type=Path, default=None, help=f"the agent's state directory ({default_data_dir})")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args(argv[1:])
    data_dir = (args.data_dir or default_data_dir).resolve()
    try:
        answer = ask(data_dir, args.action)
    except (OSError, ValueError) as exc:
        print(
            f"tensorfleet-agent desk: no agent in desk mode answers at {socket_path(data_dir)} ({exc}); is it "
            "running with --desk and this --data-dir?",
            file=sys.stderr,
        )
        return 1
    if "error" in answer:
        print(f"tensorfleet-agent desk: {answer['error']}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{answer['state']}: {answer['reason']}")
    return 0
