"""Executor.preempt's outcomes in-process, with a stand-in worker: a preempted task whose worker is then killed by
a signal (Slurm sends SIGTERM to every process of the step, the agent's workers too) or exits ends CANCELLED with
ExitCause.PREEMPTED, not FAILED, even when the worker died before the agent marked it; and a task already stopping
at a checkpoint with a longer grace (paused) is still handed back within the preemption's grace."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tensorfleet_agent.core.types import ExitCause, TaskSpec, TaskState
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.runtime import executor as executor_module
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig, _Running
from tensorfleet_agent.runtime.slots import SlotPool

REASON = "Slurm allocation 7 is ending (SIGTERM)"


class FakeWorker:
    """A worker whose event pipe closes when it exits; terminate() kills it at once."""

    def __init__(self) -> None:
        self.pid = 4242
        self.returncode: int | None = None
        self.signals: list[int] = []
        self._exit = asyncio.Event()

    @property
    def alive(self) -> bool:
        return self.returncode is None

    def die(self, code: int) -> None:
        self.returncode = code
        self._exit.set()

    async def next_messages(self) -> list[dict[str, Any]]:
        await self._exit.wait()
        return []

    async def wait(self) -> int:
        await self._exit.wait()
        assert self.returncode is not None
        return self.returncode

    def signal_worker(self, sig: int) -> None:
        self.signals.append(sig)

    async def terminate(self, grace: float = 1.0) -> None:
        self.die(-signal.SIGTERM)

    def rss_bytes(self) -> int:
        return 0


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[Executor]:
    blobs = BlobStore(tmp_path / "data" / "blobs", 1 << 30)
    executor = Executor(ExecutorConfig(tmp_path / "data", spare_workers=0), SlotPool(2, [], 1), blobs, AgentMetrics())
    try:
        yield executor
    finally:
        for task in list(executor._background):
            task.cancel()


def _task(ex: Executor, task_id: str = "t1") -> tuple[_Running, FakeWorker, asyncio.Task[Any]]:
    """A running checkpointing task on a fake worker, its _follow started; nothing journaled."""
    spec = TaskSpec(task_id, f"job-{task_id}", "script", {})
    running = _Running(spec, (), cast(Any, SimpleNamespace(finished=True)))
    worker = FakeWorker()
    running.worker = cast(Any, worker)
    ex._running[task_id] = running
    return running, worker, asyncio.create_task(ex._follow(running, cast(Any, worker)))


@pytest.mark.parametrize("code", [-signal.SIGTERM, -signal.SIGKILL, 1, 0])
async def test_preempted_then_killed_or_exited_ends_preempted(ex: Executor, code: int) -> None:
    _running, worker, follow = _task(ex)
    assert ex.preempt_all(REASON, 10.0) == ["t1"]
    await asyncio.sleep(0.01)
    assert worker.signals == [signal.SIGUSR1]  # asked to checkpoint
    worker.die(code)  # ... but the node's own SIGTERM (or an exit) came first
    status, cause, error, _reusable = await asyncio.wait_for(follow, 2)
    assert (status, cause, error) == (TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)


async def test_worker_killed_by_the_nodes_sigterm_before_the_agent_preempts(ex: Executor) -> None:
    _running, worker, follow = _task(ex)
    worker.die(-signal.SIGTERM)  # Slurm signalled the whole step; the agent's stop handler has not run yet
    await asyncio.sleep(0.1)
    ex.preempt_all(REASON, 10.0)
    status, cause, error, _reusable = await asyncio.wait_for(follow, 2)
    assert (status, cause, error) == (TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)


async def test_a_worker_killed_by_a_signal_unasked_still_fails(ex: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_module, "_SIGTERM_SETTLE", 0.1)
    for code, name in ((-signal.SIGTERM, "SIGTERM"), (-signal.SIGSEGV, "SIGSEGV")):
        _running, worker, follow = _task(ex, name)
        worker.die(code)
        status, cause, error, _reusable = await asyncio.wait_for(follow, 2)
        assert (status, cause, error) == (TaskState.FAILED, ExitCause.SIGNAL, f"worker killed by {name}")


async def test_a_task_stopping_with_a_longer_grace_is_handed_back_within_the_preempt_grace(ex: Executor) -> None:
    running, worker, follow = _task(ex)
    assert await ex.cancel("t1", "paused by the user", checkpoint_grace=60.0)  # stopping at a checkpoint, 60 s
    assert running.stop_requested and worker.signals == [signal.SIGUSR1]
    t0 = time.monotonic()
    assert await ex.preempt("t1", "the workstation's owner is back", 0.2)
    status, cause, error, _reusable = await asyncio.wait_for(follow, 2)
    assert time.monotonic() - t0 < 1.0
    assert (status, cause) == (TaskState.CANCELLED, ExitCause.PREEMPTED)
    assert error == "the workstation's owner is back (the workload did not stop at a checkpoint within 0.2s)"
