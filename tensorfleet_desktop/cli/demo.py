"""`tensorfleet demo`: a throw-away cluster on this machine running the demo jobs (the README's first command)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.output import add_format_flags


def add_parser(sub: Any) -> None:
    s = sub.add_parser("demo", help="a throw-away cluster on this machine running the demo jobs")
    s.set_defaults(run=run)
    s.add_argument("--data-dir", type=Path)
    add_format_flags(s)


def run(args: argparse.Namespace) -> int:
    from tensorfleet_desktop.demo import run_demo

    return exit_codes.OK if run_demo(args.data_dir, args.json) else exit_codes.JOB_FAILED
