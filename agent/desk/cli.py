"""Desk mode on the command line: the agent's --desk flags, and `tensorfleet-agent desk status|pause|resume`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from tensorfleet_agent.core.sizes import parse_size
from tensorfleet_agent.desk.monitor import DeskConfig
from tensorfleet_agent.desk.schedule import Hours
from tensorfleet_agent.runtime.power import parse_duration

#: Built-in values of the desk settings; the agent config file's [desk] section and then the flags override them.
DEFAULTS: dict[str, object] = {
    "enabled": False,
    "idle": "10m",
    "hours": "",
    "gpu_memory": "512MiB",
    "cpu_percent": 25.0,
    "display": "",
}
#: [desk] key -> the flag it stands for (errors about a file value name both).
_FLAGS = {
    "enabled": "--desk",
    "idle": "--desk-idle",
    "hours": "--desk-hours",
    "gpu_memory": "--desk-gpu-memory",
    "cpu_percent": "--desk-cpu-percent",
    "display": "--desk-display",
}


def add_desk_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--desk",
        action="store_true",
        default=None,
        help="desk mode: lend this workstation only while its owner is away (no keyboard or mouse input, no other "
        "programs on the GPU or CPU); hand it back within 2 s when the owner returns ([desk] enabled = true in "
        "the config file does the same)",
    )
    p.add_argument("--desk-idle", default=None, metavar="DURATION", help="idle time before lending (default: 10m)")
    p.add_argument(
        "--desk-hours", default=None, metavar="HH:MM-HH:MM", help="lend only within these local hours, e.g. 19:00-08:00"
    )
    p.add_argument(
        "--desk-gpu-memory",
        default=None,
        metavar="SIZE",
        help="GPU memory held by other programs that means the owner uses the GPU (default: 512MiB)",
    )
    p.add_argument(
        "--desk-cpu-percent",
        type=float,
        default=None,
        metavar="PERCENT",
        help="share of the machine's CPU used by other programs that means the owner uses it (default: 25)",
    )
    p.add_argument("--desk-display", default=None, metavar="DISPLAY", help="the X display to watch (default: $DISPLAY)")


def desk_settings(args: argparse.Namespace, section: dict[str, object]) -> dict[str, object]:
    """The desk settings in force: a flag given on the command line, else the config file's [desk] key, else the
    built-in default. ValueError naming the key (and its flag) for an unknown key or a value of the wrong type."""
    unknown = sorted(set(section) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"[desk] has no setting {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
    flags = {
        "enabled": args.desk,
        "idle": args.desk_idle,
        "hours": args.desk_hours,
        "gpu_memory": args.desk_gpu_memory,
        "cpu_percent": args.desk_cpu_percent,
        "display": args.desk_display,
    }
    out: dict[str, object] = {}
    for key, default in DEFAULTS.items():
        if flags[key] is not None:
            out[key] = flags[key]
            continue
        value = section.get(key, default)
        where = f"[desk] {key} (or {_FLAGS[key]})"
        if key == "enabled" and not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        if key == "cpu_percent" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if key == "idle" and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            raise ValueError(f'{where} must be a duration like "10m" or seconds, got {value!r}')
        if key == "gpu_memory" and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise ValueError(f'{where} must be a size like "512MiB" or bytes, got {value!r}')
        if key in ("hours", "display") and not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        out[key] = value
    return out


def desk_config(args: argparse.Namespace, section: dict[str, object] | None = None) -> DeskConfig | None:
    """The DeskConfig of the flags over the config file's [desk] section (None unless desk mode is on);
    ValueError naming the flag or key otherwise."""
    settings = desk_settings(args, section or {})
    if not settings["enabled"]:
        return None
    idle = parse_duration(str(settings["idle"]), "--desk-idle")
    cpu = float(settings["cpu_percent"])  # type: ignore[arg-type]  # checked by desk_settings
    if not math.isfinite(cpu) or not 0 < cpu <= 100:
        raise ValueError(f"--desk-cpu-percent ([desk] cpu_percent) must be between 0 and 100, got {cpu:g}")
    hours = str(settings["hours"])
    return DeskConfig(
        idle_seconds=idle,
        hours=Hours.parse(hours) if hours else None,
        gpu_memory_bytes=parse_size(str(settings["gpu_memory"]), "--desk-gpu-memory ([desk] gpu_memory)"),
        cpu_percent=cpu,
        display=str(settings["display"]),
    )


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
