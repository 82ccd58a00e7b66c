"""How numbers, times and job facts read in the window (plain functions; no Qt)."""

from __future__ import annotations

import json
import math
import time
from typing import Any, TypeGuard

STATE_COLORS = {
    "ONLINE": "#2ea043",
    "SUCCEEDED": "#2ea043",
    "RUNNING": "#1f6feb",
    "PREPARING": "#8250df",  # a project task: its files laid out, its env built
    "LOST": "#d1242f",
    "REFUSED": "#d1242f",
    "FAILED": "#d1242f",
    "DRAINING": "#bf8700",
    "PAUSED": "#bf8700",
    "PAUSING": "#bf8700",
    "CANCELLED": "#57606a",
    "CONNECTING": "#57606a",
}
HEADLINE_METRICS = ("test_accuracy", "val_accuracy", "accuracy", "r2", "f1_macro", "rmse", "mae", "loss")


def state_color(row: dict[str, Any]) -> str:
    return STATE_COLORS.get(str(row.get("state", "")), "")


def job_state(job: dict[str, Any]) -> str:
    """The job's state, or PREPARING while an unfinished job's tasks lay out the project and build its env (as
    `tensorfleet status` says it)."""
    state = str(job.get("state", ""))
    if state in ("QUEUED", "RUNNING") and any(t.get("state") == "PREPARING" for t in job.get("task_list") or ()):
        return "PREPARING"
    return state


def job_state_color(job: dict[str, Any]) -> str:
    return STATE_COLORS.get(job_state(job), "")


def environment_text(env: dict[str, Any] | None) -> str:
    """A task's environment in a few words: "requirements.txt · 3f2a9c1d0b7e · cache hit" or "built in 12.3 s"."""
    if not env:
        return ""
    if not env.get("key"):
        return "agent's own Python"
    how = "cache hit" if env.get("cache_hit") else f"built in {float(env.get('build_seconds') or 0.0):.1f} s"
    source = f"{env['source']} · " if env.get("source") else ""
    return f"{source}{str(env['key'])[:12]} · {how}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def clock(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    local = time.localtime(timestamp)
    same_day = time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d")
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", local)


def job_duration(job: dict[str, Any], now: float | None = None) -> float | None:
    start = job.get("started_at")
    if not start:
        return None
    return float((job.get("finished_at") or now or time.time()) - start)


def workload(job: dict[str, Any]) -> str:
    spec = job.get("spec") or {}
    if spec.get("sweep"):
        return f"{job['algorithm']} sweep"
    if spec.get("script"):
        return f"script {spec['script'].get('name', '')}"
    if spec.get("project") and spec.get("command"):
        command = " ".join(str(a) for a in spec["command"])
        return f"project: {command[:60]}{'…' if len(command) > 60 else ''}"
    return str(job.get("algorithm", ""))


def best_metric(job: dict[str, Any]) -> tuple[str, float] | None:
    metrics = job.get("metrics") or {}
    for name in HEADLINE_METRICS:
        if name in metrics:
            return name, float(metrics[name])
    return None


def metric_text(job: dict[str, Any]) -> str:
    best = best_metric(job)
    return f"{best[0]} {best[1]:.4g}" if best else ""


def job_agents(job: dict[str, Any]) -> str:
    names = sorted({t["agent"] for t in job.get("task_list") or [] if t.get("agent")})
    return ", ".join(names)


def percent(used: float, total: float) -> float:
    return 100.0 * used / total if total else 0.0


def is_number(value: Any) -> TypeGuard[int | float]:
    """A finite int or float (not a bool): what can sit on a numeric axis or sort as a number."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def compact(value: Any) -> str:
    """A value as every table, legend and axis writes it: floats to 4 significant digits, lists and dicts as
    compact JSON, None as nothing, the rest (ints, bools, text) as written."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def short_values(values: dict[str, Any] | None) -> str:
    """Parameters or metrics on one line: "C=0.1, kernel=rbf"."""
    if not values:
        return ""
    return ", ".join(f"{k}={compact(v)}" for k, v in values.items())
