"""report() in a worker: one pipe message per call, whatever the number of metrics, read back as one point each."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorfleet_agent import task
from tensorfleet_agent.core.types import MetricPoint
from tensorfleet_agent.runtime.channel import EventChannel
from tensorfleet_agent.runtime.executor import _payloads


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[int]:
    """The read end of an event pipe that task.* reports into, as in a worker."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    task._install(task.TaskContext({}, tmp_path, None, EventChannel(write)))
    try:
        yield read
    finally:
        task._install(None)
        os.close(read)
        os.close(write)


def _messages(read: int) -> list[bytes]:
    try:
        return os.read(read, 1 << 16).splitlines(keepends=True)
    except BlockingIOError:
        return []


def test_one_call_is_one_message_and_a_point_per_metric(pipe: int) -> None:
    task.report(step=3, loss=0.5, accuracy=0.9)
    (line,) = _messages(pipe)
    points = _payloads(json.loads(line))
    assert [(p.name, p.step, p.value) for p in points if isinstance(p, MetricPoint)] == [
        ("loss", 3, 0.5),
        ("accuracy", 3, 0.9),
    ]
    assert len({p.wall_time for p in points if isinstance(p, MetricPoint)}) == 1


def test_a_nan_refuses_the_whole_call(pipe: int) -> None:
    with pytest.raises(ValueError, match="'accuracy' is NaN"):
        task.report(step=1, loss=0.5, accuracy=float("nan"))
    task.report(step=2)  # nothing to report: nothing sent
    assert _messages(pipe) == []
