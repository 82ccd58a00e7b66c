"""`tensorfleet desk-tray`: the desk-mode tray icon of the agent on this machine (desktop extra)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "desk-tray",
        help="a tray icon showing whether this workstation's agent lends it (desk mode), to pause or resume lending",
    )
    s.add_argument(
        "--agent-data-dir",
        type=Path,
        default=None,
        help="the data dir of the agent on this machine (default: tensorfleet-agent's own default)",
    )
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tensorfleet_agent.__main__ import default_data_dir

    if importlib.util.find_spec("PySide6") is None:
        print("tensorfleet desk-tray needs the desktop extra: pip install 'tensorfleet[desktop]'", file=sys.stderr)
        return exit_codes.USAGE
    from tensorfleet_desktop.ui.desk_tray import run as run_tray

    return run_tray((args.agent_data_dir or default_data_dir()).resolve())
