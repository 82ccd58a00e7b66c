"""Judging a job by its stored history: nothing lost, nothing duplicated, no task completed twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.types import MetricPoint
from tensorfleet_agent.runtime.journal import EVENTS_FILE, read_events


def _journal_metrics(tasks_dirs: Iterable[Path], attempt: str) -> set[tuple[str, int]] | None:
    """The (name, step) of every metric an agent journaled for an attempt; None if no journal has it."""
    for tasks in tasks_dirs:
        path = tasks / attempt / EVENTS_FILE
        if path.exists():
            return {(e.payload.name, e.payload.step) for e in read_events(path) if isinstance(e.payload, MetricPoint)}
    return None


def check_history(client: Any, job_id: str, agent_data_dirs: Iterable[Path] = ()) -> list[dict[str, Any]]:
    """Assert the job's stored events and metrics are whole; returns the events.

    - the job's event sequence numbers run 1..n, without a gap or a repeat;
    - each task index reached SUCCEEDED at most once (a task run twice to completion would show twice);
    - no attempt stored the same metric step twice;
    - against the agents' own journals (when their data dirs are given): the attempt each task finished
      with has every metric point its agent journaled, and no attempt has a point its agent never wrote.
    """
    events: list[dict[str, Any]] = list(client.watch(job_id))  # the SDK streams: keep what it sent
    seqs: list[int] = []
    for e in events:  # a batch of metric points or log lines carries one record seq per row
        rows = e.get("points") if e["kind"] == "metrics" else e.get("lines") if e["kind"] == "logs" else None
        seqs.extend([row["seq"] for row in rows] if rows is not None else [e["seq"]])
    assert seqs == list(range(1, len(seqs) + 1)), f"event sequence has a gap or a repeat: {seqs}"
    succeeded = Counter(e["task_index"] for e in events if e["kind"] == "task_state" and e["state"] == "SUCCEEDED")
    twice = {index: n for index, n in succeeded.items() if n > 1}
    assert not twice, f"tasks completed more than once: {twice}"
    stored: dict[str, list[tuple[str, int]]] = {}
    for point in client.metrics(job_id):
        stored.setdefault(point["agent_task_id"], []).append((point["name"], point["step"]))
    for attempt, points in stored.items():
        assert len(points) == len(set(points)), f"{attempt}: a metric step stored twice"
    tasks_dirs = [Path(d) / "tasks" for d in agent_data_dirs]
    if tasks_dirs:
        final = {t["agent_task_id"] for t in client.job(job_id)["task_list"] if t["state"] == "SUCCEEDED"}
        compared = 0
        for attempt in final | set(stored):
            journaled = _journal_metrics(tasks_dirs, attempt)
            if journaled is None:
                continue  # e.g. an agent whose disk is gone
            compared += attempt in final
            have = set(stored.get(attempt, []))
            assert have <= journaled, f"{attempt}: stored points its agent never journaled"
            if attempt in final:
                assert have == journaled, f"{attempt}: {len(journaled - have)} journaled point(s) never stored"
        # a journal format the helper cannot read must not turn the comparison into a silent no-op
        assert compared or not final, f"no agent journal found for the finished attempts {sorted(final)}"
    return events


def first_event_after(events: list[dict[str, Any]], at: float, **match: Any) -> dict[str, Any]:
    """The first stored event after wall-clock time `at` whose fields equal `match`."""
    for event in events:
        if event["time"] >= at and all(event.get(k) == v for k, v in match.items()):
            return event
    raise AssertionError(f"no event {match} after {at}")
