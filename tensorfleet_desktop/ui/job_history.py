"""A job's metric points grouped into per-series numpy arrays (no Qt), so a plot takes a whole batch at once.

The bridge builds these on its own thread from WatchJob messages (`BatchBuilder`, straight from the protobuf rows,
no dict per point); the GUI thread only appends arrays (docs/architecture.md, 'The path of a metric point').
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorfleet_desktop import wire


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
    return _chunks(grouped)


def _chunks(grouped: dict[tuple[str, int], tuple[list[float], list[float], list[float]]]) -> list[SeriesChunk]:
    return [
        SeriesChunk(name, task, np.asarray(s, dtype=float), np.asarray(v, dtype=float), np.asarray(w, dtype=float))
        for (name, task), (s, v, w) in grouped.items()
    ]


def merge_chunks(chunks: Iterable[SeriesChunk]) -> list[SeriesChunk]:
    """Chunks of several batches as one per (metric, task), in order: a held-back history goes to the plots in
    one append per curve."""
    grouped: dict[tuple[str, int], list[SeriesChunk]] = {}
    for chunk in chunks:
        grouped.setdefault((chunk.metric, chunk.task_index), []).append(chunk)
    return [
        parts[0]
        if len(parts) == 1
        else SeriesChunk(
            metric,
            task,
            np.concatenate([c.step for c in parts]),
            np.concatenate([c.value for c in parts]),
            np.concatenate([c.wall for c in parts]),
        )
        for (metric, task), parts in grouped.items()
    ]


@dataclass
class JobBatch:
    """What arrived for the followed job since the last batch: metric chunks, log lines and every other event
    (job_state, task_state, progress, checkpoint, artifact) as `wire.job_event_from_pb` dicts.

    `last_seq` is the last event seq it covers: consecutive batches of one watch never overlap."""

    job_id: str
    chunks: list[SeriesChunk] = field(default_factory=list)
    logs: list[tuple[int, str, str]] = field(default_factory=list)  # (task_index, stream, line)
    events: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0

    @property
    def points(self) -> int:
        return sum(len(c) for c in self.chunks)


class BatchBuilder:
    """Collects WatchJob messages (`controller_pb2.JobEvent`) until the bridge hands them over as one JobBatch.

    Points go from the protobuf rows into per-series lists without a dict per point: on a replay of a long
    history this is most of the Python work the bridge's thread does (and that thread shares the GIL with the
    GUI's)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.last_seq = 0  # the last seq received, kept across batches: where a resumed watch starts
        self._series: dict[tuple[str, int], tuple[list[float], list[float], list[float]]] = {}
        self._logs: list[tuple[int, str, str]] = []
        self._events: list[dict[str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._series or self._logs or self._events)

    def add(self, msg: Any) -> None:
        """One JobEvent message (metrics and logs carry up to wire.MAX_BATCH rows each)."""
        if msg.seq <= self.last_seq:  # already received (a resumed stream never repeats, but be sure)
            return
        self.last_seq = msg.seq
        kind = msg.WhichOneof("body")
        if kind == "metrics":
            series = self._series
            for p in msg.metrics.points:
                key = (p.name, p.task_index)
                lists = series.get(key)
                if lists is None:
                    lists = series[key] = ([], [], [])
                lists[0].append(p.step)
                lists[1].append(p.value)
                lists[2].append(p.wall_time)
        elif kind == "logs":
            stream = wire.log_stream_from_pb
            self._logs.extend((r.task_index, stream(r.stream), r.line) for r in msg.logs.lines)
        else:
            self._events.append(wire.job_event_from_pb(msg))

    def take(self) -> JobBatch:
        """Everything collected since the last take, as numpy chunks; the builder starts over (keeping last_seq)."""
        batch = JobBatch(self.job_id, _chunks(self._series), self._logs, self._events, self.last_seq)
        self._series, self._logs, self._events = {}, [], []
        return batch
