"""Issue 21's Targets table as rows the benchmarks print: one shape for every measure, so that
benchmarks/targets.py can gather them into one `targets` object.

A row: measure, unit, tensorfleet figure, ray figure (None where Ray was skipped or has no such figure),
peer (what the ratio compares against), ratio, goal (text and the bound it means) and met (None where a
ratio needs the Ray figure and Ray was skipped). Also the machine's load, reported beside every figure.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any


def load() -> dict[str, Any]:
    """Load averages (1, 5, 15 min) and CPUs: figures on a shared 2-core machine mean little without it."""
    one, five, fifteen = os.getloadavg()
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    return {"loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)], "cpus": os.cpu_count(), "uptime": uptime}


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


def row(
    measure: str,
    unit: str,
    tensorfleet: float | None,
    ray: float | None,
    *,
    goal: str,
    at_least: float | None = None,
    at_most: float | None = None,
    on: str = "ratio",
    ratio_value: float | None = None,
    peer: str = "ray",
    peer_figure: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One Targets row. The goal is judged `on` the ratio or on the tensorfleet figure itself (an absolute
    goal such as "<= 5 ms"), against `at_least` / `at_most`."""
    judged = ratio_value if on == "ratio" else tensorfleet
    met: bool | None = None
    if judged is not None:
        met = (at_least is None or judged >= at_least) and (at_most is None or judged <= at_most)
    out: dict[str, Any] = {
        "measure": measure,
        "unit": unit,
        "tensorfleet": tensorfleet,
        "ray": ray,
        "peer": peer,
        "ratio": ratio_value,
        "goal": goal,
        "met": met,
    }
    if peer != "ray":
        out["peer_figure"] = peer_figure
    if note:
        out["note"] = note
    return out
