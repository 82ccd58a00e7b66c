"""`tensorfleet gui` (and `tensorfleet` with no command): the desktop app."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from tensorfleet_desktop.cli import exit_codes


def add_parser(sub: Any) -> None:
    s = sub.add_parser("gui", help="open the desktop app (the default when no command is given)")
    s.set_defaults(run=run)
    s.add_argument(
        "--controller",
        default=argparse.SUPPRESS,  # `tensorfleet --controller X gui` keeps X
        help="controller address HOST:PORT (default: $TENSORFLEET_CONTROLLER, Settings, or 127.0.0.1:50050; "
        "the app starts a controller only at 127.0.0.1:50050)",
    )
    s.add_argument(
        "--data-dir",
        type=Path,
        help="data dir of the controller the app starts when none answers (with --demo: the demo's data dir)",
    )
    s.add_argument("--no-start", action="store_true", help="only connect; never start a controller")
    s.add_argument(
        "--demo",
        action="store_true",
        help="open on the demo cluster (started on 127.0.0.1:$TENSORFLEET_DEMO_PORT or 50055 when not running; "
        "it outlives the window until Quit and stop) running the demo jobs; without a display: `tensorfleet demo`",
    )
    s.add_argument("--screenshot", type=Path, help=argparse.SUPPRESS)  # smoke tests of packaged builds


def run(args: argparse.Namespace) -> int:
    """Open the window (desktop extra); without a display or the extra, say what to do instead."""
    missing = [m for m in ("PySide6", "pyqtgraph") if importlib.util.find_spec(m) is None]
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    )
    problem = "" if missing or headless else x11_problem()
    if args.demo:
        from tensorfleet_desktop.demo import run_demo, run_gui_demo

        if not (missing or headless or problem):
            return run_gui_demo(args.data_dir, screenshot=args.screenshot)
        why = problem or "no display or no desktop extra"
        print(f"tensorfleet gui --demo: no window here ({why}): the terminal table", file=sys.stderr)
        return exit_codes.OK if run_demo(args.data_dir, False) else exit_codes.JOB_FAILED
    if missing:
        print(
            f"tensorfleet: the desktop app needs {' and '.join(missing)}: pip install 'tensorfleet[desktop]'\n"
            "  (the CLI works without it: tensorfleet --help)",
            file=sys.stderr,
        )
        return exit_codes.USAGE
    if headless:
        print(
            "tensorfleet: no display to open the window on (DISPLAY / WAYLAND_DISPLAY unset);\n"
            "  use the CLI (tensorfleet --help), or set QT_QPA_PLATFORM=offscreen",
            file=sys.stderr,
        )
        return exit_codes.USAGE
    if problem:
        print(f"tensorfleet: the window cannot open: {problem}", file=sys.stderr)
        return exit_codes.USAGE
    from tensorfleet_desktop.ui.app import run as run_gui

    return run_gui(
        args.controller,
        args.data_dir,
        autostart=not args.no_start,
        screenshot=args.screenshot,
    )


def display_available() -> bool:
    """A screen to open the window on: Windows and macOS, or DISPLAY / WAYLAND_DISPLAY. Qt's offscreen platform
    does not count: CI sets it and wants the terminal table."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def desktop_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("PySide6", "pyqtgraph"))


#: What Qt 6's X11 plugin links that a desktop without Qt apps may lack (Debian/Ubuntu package names).
XCB_PACKAGES = "libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0"


def x11_problem() -> str:
    """Why Qt's X11 plugin cannot load here ("" when it can, or when Qt will not use it). Qt itself aborts the
    process with a hint that names one library when another is missing; this says which, before any window."""
    if not sys.platform.startswith("linux") or not os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return ""
    if os.environ.get("QT_QPA_PLATFORM", "xcb").split(":")[0] != "xcb":
        return ""
    spec = importlib.util.find_spec("PySide6")
    folders = list(spec.submodule_search_locations or []) if spec else []
    plugin = Path(folders[0], "Qt", "plugins", "platforms", "libqxcb.so") if folders else None
    if plugin is None or not plugin.exists():
        return ""
    import ctypes

    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        return (
            f"Qt's X11 plugin does not load ({exc}); install the X11 libraries Qt 6 needs "
            f"(Debian/Ubuntu: sudo apt install {XCB_PACKAGES})"
        )
    return ""
