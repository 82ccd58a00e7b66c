"""A job's metric points grouped into per-series numpy arrays (no Qt), so a plot takes a whole batch at once.

The bridge builds these on its own thread from WatchJob events; the GUI thread only appends arrays
(docs/architecture.md, 'The path of a metric point').
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SeriesChunk:
    """Consecutive points of one metric of one task: steps, values and wall-clock times, in arrival order."""

    metric: str
    task_index: int
    step: np.ndarray
    value: np.ndarray
    wall: np.ndarray

    def __len__(self) -> int:
        return len(self.step)


def group_points(points: Iterable[dict[str, Any]]) -> list[SeriesChunk]:
    """Metric rows (as `Client.metrics` / a metrics event gives them) as one chunk per (metric, task)."""
    grouped: dict[tuple[str, int], tuple[list[float], list[float], list[float]]] = {}
    for p in points:
        steps, values, walls = grouped.setdefault((p["name"], p["task_index"]), ([], [], []))
        steps.append(p["step"])
        values.append(p["value"])
        walls.append(p["wall_time"])
    return [
        SeriesChunk(name, task, np.asarray(s, dtype=float), np.asarray(v, dtype=float), np.asarray(w, dtype=float))
        for (name, task), (s, v, w) in grouped.items()
    ]


@dataclass
class JobBatch:
    """What arrived for the followed job since the last batch: metric chunks, log lines and every other event
    (job_state, task_state, progress, checkpoint, artifact) as `wire.job_event_from_pb` dicts."""

    job_id: str
    chunks: list[SeriesChunk] = field(default_factory=list)
    logs: list[tuple[int, str, str]] = field(default_factory=list)  # (task_index, stream, line)
    events: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0

    @property
    def points(self) -> int:
        return sum(len(c) for c in self.chunks)
