"""The fleet view's GPU cell and tooltip say how GPUs are shared by memory (no window, no cluster)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6", reason="the desktop extra (PySide6) is not installed")

from tensorfleet_desktop.ui.fleet_view import _gpu_tooltip, _gpus

GIB = 1 << 30


def test_gpu_cell_and_tooltip_show_shares() -> None:
    base = {"temperature_celsius": 40.0, "power_watts": 90.0, "memory_total_bytes": 16 * GIB}
    shared = {**base, "index": 0, "utilization_percent": 37.0, "memory_used_bytes": 9 * GIB}
    shared |= {"memory_reserved_bytes": 12 * GIB, "shared_tasks": 2, "exclusive": False}
    whole = {**base, "index": 1, "utilization_percent": 80.0, "memory_used_bytes": 15 * GIB, "exclusive": True}
    agent = {"gpus": 2, "gpu_stats": [shared, whole]}
    assert _gpus(agent) == "37% 80% (2 sharing)"
    tooltip = _gpu_tooltip(agent).splitlines()
    assert tooltip[0].endswith("promised to 2 sharing task(s)") and "12" in tooltip[0]
    assert tooltip[1].endswith("; held whole by a task")
    assert _gpus({"gpus": 2, "gpu_stats": [whole]}) == "80%"
