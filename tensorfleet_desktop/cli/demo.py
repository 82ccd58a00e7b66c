"""`tensorfleet demo`: the demo jobs on a cluster on this machine (the README's first command). With a display
(and the desktop extra) the app opens on a demo cluster that outlives the window; without one, a throw-away
cluster trains them and the terminal prints a table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.output import add_format_flags


def add_parser(sub: Any) -> None:
    s = sub.add_parser("demo", help="the demo jobs on a cluster on this machine, in the app when there is a display")
    s.set_defaults(run=run)
    s.add_argument(
        "--data-dir",
        type=Path,
        help="the demo's data dir (default: a temp dir for the table; for the app the user's …/tensorfleet/demo "
        "or $TENSORFLEET_DEMO_DIR)",
    )
    s.add_argument(
        "--gui",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="open the desktop app on a demo cluster that keeps running (default: when there is a display), "
        "or --no-gui: train on a throw-away cluster and print the table",
    )
    s.add_argument(
        "--port",
        type=int,
        help="the app's demo cluster listens on 127.0.0.1:PORT (default: $TENSORFLEET_DEMO_PORT or 50055)",
    )
    add_format_flags(s)


def run(args: argparse.Namespace) -> int:
    from tensorfleet_desktop.cli.gui import desktop_installed, display_available, x11_problem
    from tensorfleet_desktop.demo import run_demo, run_gui_demo

    if args.gui:
        return run_gui_demo(args.data_dir, args.port) if _can_open_window() else exit_codes.USAGE
    if args.gui is None and not args.json and display_available():
        problem = (
            x11_problem()
            if desktop_installed()
            else "the desktop app is not installed (pip install 'tensorfleet[desktop]')"
        )
        if not problem:
            return run_gui_demo(args.data_dir, args.port)
        print(f"tensorfleet demo: {problem}; the terminal shows the demo instead", file=sys.stderr)
    return exit_codes.OK if run_demo(args.data_dir, args.json) else exit_codes.JOB_FAILED


def _can_open_window() -> bool:
    """--gui asked for the window: say why it cannot open (no extra, no display) instead of a Qt abort."""
    import os

    from tensorfleet_desktop.cli.gui import desktop_installed, display_available, x11_problem

    if not desktop_installed():
        print("tensorfleet demo --gui: the desktop app needs pip install 'tensorfleet[desktop]'", file=sys.stderr)
        return False
    if problem := x11_problem():
        print(f"tensorfleet demo --gui: {problem}", file=sys.stderr)
        return False
    if not (display_available() or os.environ.get("QT_QPA_PLATFORM")):
        print(
            "tensorfleet demo --gui: no display to open the window on (DISPLAY / WAYLAND_DISPLAY unset); "
            "run it without --gui for the terminal table",
            file=sys.stderr,
        )
        return False
    return True
