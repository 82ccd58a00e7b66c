"""Executor.preempt on real worker processes: a workload that can checkpoint saves one and stops, one that cannot is
stopped at once, one that will not stop is killed after the grace; each ends CANCELLED with ExitCause.PREEMPTED and
the reason as its error (the controller re-queues it: tests/unit/test_core_preemption.py)."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_agent.core.types import (
    BlobRef,
    CheckpointSaved,
    ExitCause,
    Finished,
    LogLine,
    Progress,
    TaskSpec,
    TaskState,
)
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.rpc.convert import events_from_batch
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig
from tensorfleet_agent.runtime.slots import SlotPool

pytestmark = pytest.mark.slow
REASON = "the desk owner is back"

CHECKPOINTS = """
import pathlib, time
from tensorfleet_agent import task
print("started", flush=True)
step = 0
while True:
    step += 1
    if task.stop_requested():
        path = pathlib.Path("state.bin"); path.write_bytes(b"step %d" % step)
        task.save_checkpoint(path, step=step)
        raise task.Stopped(f"saved a checkpoint at step {step}")
    time.sleep(0.02)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
print("started", flush=True)
time.sleep(60)
"""


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[Executor]:
    blobs = BlobStore(tmp_path / "data" / "blobs", 1 << 30)
    ex = Executor(ExecutorConfig(tmp_path / "data", spare_workers=0), SlotPool(4, [], 3), blobs, AgentMetrics())
    await ex.start()
    try:
        yield ex
    finally:
        await ex.close()


async def _script(ex: Executor, tmp: Path, task_id: str, source: str) -> TaskSpec:
    path = tmp / f"{task_id}.py"
    path.write_text(textwrap.dedent(source))
    digest = file_sha256(path)
    writer = ex.blobs.writer(digest, path.stat().st_size)
    writer.write(path.read_bytes())
    writer.commit()
    params = {"script": path.name, "args": [], "sha256": digest}
    return TaskSpec(task_id, f"job-{task_id}", "script", params, inputs=(BlobRef(path.name, digest),))


async def _started(ex: Executor, task_id: str, line: str = "started") -> None:
    async for batch in ex.watch(task_id, 0):
        for event in events_from_batch(batch):
            p = event.payload
            if (isinstance(p, LogLine) and p.line == line) or (isinstance(p, Progress) and not line):
                return


async def _end(ex: Executor, task_id: str) -> tuple[Finished, list[object], float]:
    payloads: list[object] = []
    async for batch in ex.watch(task_id, 0):
        for event in events_from_batch(batch):
            payloads.append(event.payload)
            if isinstance(event.payload, Finished):
                return event.payload, payloads, event.time
    raise AssertionError("no end")


async def test_preempt_checkpoints_stops_or_kills_and_says_preempted(executor: Executor, tmp_path: Path) -> None:
    ex = executor
    polite = await _script(ex, tmp_path, "polite", CHECKPOINTS)
    stubborn = await _script(ex, tmp_path, "stubborn", STUBBORN)
    plain = TaskSpec("sleep1", "job-sleep", "sleep", {"seconds": 60})  # cannot checkpoint
    for spec in (polite, stubborn, plain):
        await ex.run_task(spec)
    started = (_started(ex, "polite"), _started(ex, "stubborn"), _started(ex, "sleep1", ""))
    await asyncio.wait_for(asyncio.gather(*started), 30)
    t0 = time.time()
    assert sorted(ex.preempt_all(REASON, checkpoint_grace=1.0)) == ["polite", "sleep1", "stubborn"]
    names = ("polite", "stubborn", "sleep1")
    ends = dict(zip(names, await asyncio.gather(*(_end(ex, t) for t in names)), strict=True))

    fin, payloads, at = ends["polite"]
    assert (fin.status, fin.exit_cause, fin.error) == (TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)
    assert any(isinstance(p, CheckpointSaved) for p in payloads) and at - t0 < 1.0

    fin, _, at = ends["sleep1"]  # no checkpoint to wait for: stopped at once
    assert (fin.status, fin.exit_cause, fin.error) == (TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)
    assert at - t0 < 1.0

    fin, _, at = ends["stubborn"]  # ignored the request: killed after the grace
    assert (fin.status, fin.exit_cause) == (TaskState.CANCELLED, ExitCause.PREEMPTED)
    assert fin.error == f"{REASON} (the workload did not stop at a checkpoint within 1s)"
    assert 1.0 <= at - t0 < 3.0
    assert ex.tasks_running == 0 and ex.slots.free == ex.slots.total
    assert await ex.preempt("polite", REASON, 1.0) is False  # over already
