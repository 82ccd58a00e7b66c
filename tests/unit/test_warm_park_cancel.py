"""A cancel that lands while a finished task's worker is being handed back (after its `done`, before it is parked)
must not put that worker, being stopped, in the pool another job's task takes from (in-process Executor, real
spawned workers: the family pool without the fork server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest

from tensorfleet_agent.core.types import TaskSpec, TaskState
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.runtime import process as process_module
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig
from tensorfleet_agent.runtime.process import WorkerProcess
from tensorfleet_agent.runtime.slots import SlotPool


async def test_a_cancel_while_a_worker_is_handed_back_does_not_kill_the_next_job_s_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ex = Executor(
        ExecutorConfig(tmp_path / "data", spare_workers=0, fork_server=False),
        SlotPool(1, [], 1),
        BlobStore(tmp_path / "data" / "blobs", 1 << 30),
        AgentMetrics(),
    )
    await ex.start()
    drain = WorkerProcess.drain_output
    cancels: list[asyncio.Task[bool]] = []

    async def cancelled_meanwhile(self: WorkerProcess, rounds: int = 64) -> None:
        if "t1" in ex._running and not ex._running["t1"].kill_cause:
            cancels.append(asyncio.create_task(ex.cancel("t1", "the user cancelled the job")))  # CancelTask, now
        await drain(self, rounds)

    scan = process_module._descendants

    def slow_scan(pid: int) -> list[psutil.Process]:  # terminate()'s search of the process table, as on a loaded box
        time.sleep(0.3)
        return scan(pid)

    monkeypatch.setattr(WorkerProcess, "drain_output", cancelled_meanwhile)
    monkeypatch.setattr(process_module, "_descendants", slow_scan)
    try:
        for task_id, job, workload, params in (("t1", "job-A", "noop", {}), ("t2", "job-B", "sleep", {"seconds": 1})):
            await ex.run_task(TaskSpec(task_id, job, workload, params))
            runner = ex._running[task_id].runner
            assert runner is not None
            await runner  # the next RunTask comes right after (a busy agent)
        entry = ex.journal.get("t2")
        assert (entry.state, entry.exit_cause) == (TaskState.SUCCEEDED, "completed")
    finally:
        await ex.close()
