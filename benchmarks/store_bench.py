#!/usr/bin/env python3
"""The job store's event writes, as JSON, beside plain sqlite3 on the same disk in the same run.

- store: N metric events queued one by one with `append_events` (the controller's path: the caller never waits
  for the database), then `flush`; `queue_s` is what the event loop spent queueing, `total_s` until all are
  committed, `commits` how many transactions the writer used.
- peers: the same rows into the same schema with plain sqlite3: one `executemany` in one transaction (the best
  case for batching), and one commit per row (what a store without a writer thread would do).

- sweep_saves: a --trials (200) trial sweep job with two artifacts per trial, saved twice per trial as the
  controller does (placed, then ended): `rows` names the trial (save_job(job, [task]): its row, the summary and
  the new artifacts), `whole` writes every task and artifact each time (what every save did before). CPU is the
  process's (event loop and writer thread), queue_s the event loop's alone.

Usage: python benchmarks/store_bench.py [--events 5000] [--trials 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord, JobTask, TaskRunState  # noqa: E402
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore, record_values  # noqa: E402


def _metric(seq: int) -> JobEventRecord:
    return JobEventRecord(
        job_id="j1", seq=seq, time=float(seq), kind="metric", task_index=0, attempt_id="j1-r0-a1",
        agent_seq=seq, step=seq, name="loss", value=1.0 / seq,
    )  # fmt: skip


async def through_store(path: Path, n: int) -> dict[str, Any]:
    store = SqliteJobStore(path)
    await store.open()
    commits = 0
    commit = store._commit

    def counted(*args: Any) -> Any:
        nonlocal commits
        commits += 1
        return commit(*args)

    store._commit = counted  # type: ignore[method-assign,assignment]
    job = Job(id="j1", spec={"algorithm": "noop"}, submitter="bench", seq_no=1, created_at=1.0,
              tasks=[JobTask(index=0, state=TaskRunState.RUNNING, agent_task_id="j1-r0-a1", attempt=1)])  # fmt: skip
    store.save_job(job)
    await store.flush()
    commits = 0
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        store.append_events([_metric(i)], {"j1-r0-a1": i})
    queued = time.perf_counter() - t0
    await store.flush()
    total = time.perf_counter() - t0
    assert len(await store.events("j1", 0)) == n
    await store.close()
    return {"queue_s": round(queued, 4), "total_s": round(total, 4), "commits": commits,
            "events_per_s": round(n / total)}  # fmt: skip


def _rows(path: Path, n: int) -> tuple[sqlite3.Connection, str, list[tuple[Any, ...]]]:
    """A connection to a store-made database (same schema, same pragmas) and the rows the store would write."""
    asyncio.run(_make(path))
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    rows = [record_values(_metric(i)) for i in range(1, n + 1)]
    return conn, "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows


async def _make(path: Path) -> None:
    store = SqliteJobStore(path)
    await store.open()
    await store.close()


def peer_executemany(path: Path, n: int) -> dict[str, Any]:
    conn, sql, rows = _rows(path, n)
    t0 = time.perf_counter()
    with conn:
        conn.executemany(sql, rows)
    total = time.perf_counter() - t0
    conn.close()
    return {"total_s": round(total, 4), "commits": 1, "events_per_s": round(n / total)}


def peer_commit_each(path: Path, n: int) -> dict[str, Any]:
    conn, sql, rows = _rows(path, n)
    t0 = time.perf_counter()
    for row in rows:
        with conn:
            conn.execute(sql, row)
    total = time.perf_counter() - t0
    conn.close()
    return {"total_s": round(total, 4), "commits": n, "events_per_s": round(n / total)}


async def sweep_saves(path: Path, trials: int, whole: bool) -> dict[str, Any]:
    store = SqliteJobStore(path)
    await store.open()
    tasks = [JobTask(index=i, params={"max_depth": i % 10 + 1}) for i in range(trials)]
    spec = {"algorithm": "decision_tree", "sweep": {"trials": trials}}
    job = Job(id="jsweep", spec=spec, submitter="me", seq_no=1, created_at=1.0, tasks=tasks)
    await store.insert_job(job)
    cpu0, t0, queued = time.process_time(), time.perf_counter(), 0.0
    for task in job.tasks:
        task.state, task.agent_task_id = TaskRunState.DISPATCHED, f"jsweep-r{task.index}-a1"
        q0 = time.perf_counter()
        store.save_job(job, None if whole else [task])
        queued += time.perf_counter() - q0
        task.state, task.metrics = TaskRunState.SUCCEEDED, {"test_accuracy": 0.9, "train_accuracy": 1.0}
        job.artifacts += [ArtifactInfo(f"{task.index:064x}", 1000, k, k, task.index) for k in ("model", "report")]
        q0 = time.perf_counter()
        store.save_job(job, None if whole else [task])
        queued += time.perf_counter() - q0
        await asyncio.sleep(0)
    await store.flush()
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await store.close()
    return {"saves": 2 * trials, "queue_s": round(queued, 4), "total_s": round(total, 4), "cpu_s": round(cpu, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf-store-bench-") as tmp:
        out = {
            "events": args.events,
            "store_append_events": asyncio.run(through_store(Path(tmp) / "store.db", args.events)),
            "peer_sqlite3_executemany": peer_executemany(Path(tmp) / "many.db", args.events),
            "peer_sqlite3_commit_each": peer_commit_each(Path(tmp) / "each.db", args.events),
            "sweep_saves": {
                "trials": args.trials,
                "rows": asyncio.run(sweep_saves(Path(tmp) / "rows.db", args.trials, whole=False)),
                "whole": asyncio.run(sweep_saves(Path(tmp) / "whole.db", args.trials, whole=True)),
            },
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
