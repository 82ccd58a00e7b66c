"""An agent that (re)appears while the controller is busy with it: its tasks are neither lost nor run twice.

Found by benchmarks/scale_sim.py at 10,000 jobs / 200 agents: an agent's "paired" / "added" / "back" reconcile
followed attempts whose RunTask was still on its way, the agent answered "unknown task", the controller counted
the attempt lost ("rank 0 lost ... re-placed 5 times") while the agent went on to run it; and a task dropped when
its agent went silent was cancelled there and started again, although it still waited in the queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import TaskSpec
from tensorfleet_desktop.controller.model import JobState, TaskRunState


class SlowToAccept(FakeAgents):
    """RunTask waits at the door until the test opens it; ListTasks says when it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.door = asyncio.Event()
        self.knocking = asyncio.Event()
        self.listed = asyncio.Event()

    async def run_task(self, node_id: str, spec: TaskSpec) -> None:
        self.knocking.set()
        await self.door.wait()
        await super().run_task(node_id, spec)

    async def list_tasks(self, node_id: str) -> list[tuple[str, str]]:
        try:
            return await super().list_tasks(node_id)
        finally:
            self.listed.set()


async def test_a_reconcile_during_run_task_does_not_lose_the_attempt(tmp_path: Path) -> None:
    agents, clock = SlowToAccept(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await asyncio.wait_for(agents.knocking.wait(), 10)
        attempt = job.tasks[0].agent_task_id
        agents.listed.clear()
        agents._emit("paired", "a1")  # the fleet's next word on this agent arrives while RunTask is on its way
        await asyncio.wait_for(agents.listed.wait(), 10)
        for _ in range(20):  # let a watcher the reconcile may have started hear "unknown task"
            await asyncio.sleep(0)
        assert job.tasks[0].agent_task_id == attempt and job.tasks[0].replacements == 0, job.tasks[0]
        agents.door.set()
        await agents.wait(lambda: ("run", "a1", attempt) in agents.calls)
        agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert [c for c in agents.calls if c[0] == "run"] == [("run", "a1", attempt)]
        assert job.tasks[0].attempt == 1


async def test_an_agent_back_from_silence_keeps_the_task_it_still_runs(tmp_path: Path) -> None:
    agents, clock = SlowToAccept(), FakeClock()
    agents.door.set()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}}, "me")
        await until(controller, lambda: job.tasks[0].state is TaskRunState.RUNNING)
        attempt = job.tasks[0].agent_task_id
        agents.lose("a1")  # silent for a while (a busy network, a stalled host): its task is queued again
        await until(controller, lambda: job.tasks[0].state is TaskRunState.PENDING)
        agents.back("a1")  # it still runs the attempt; nothing else took the task meanwhile
        await until(controller, lambda: job.tasks[0].agent_task_id == attempt)
        agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert [c for c in agents.calls if c[0] != "refused"] == [("run", "a1", attempt)]  # no cancel, no rerun
        assert job.tasks[0].replacements == 0 and attempt not in job.tasks[0].stale_attempts


async def test_an_agent_back_after_its_task_moved_on_has_its_copy_cancelled(tmp_path: Path) -> None:
    agents, clock = SlowToAccept(), FakeClock()
    agents.door.set()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}}, "me")
        await until(controller, lambda: job.tasks[0].state is TaskRunState.RUNNING)
        first = job.tasks[0].agent_task_id
        agents.lose("a1")
        agents.add("a2")  # the task runs there now
        await until(controller, lambda: job.tasks[0].node_id == "a2" and job.tasks[0].state.active)
        second = job.tasks[0].agent_task_id
        agents.back("a1")
        await agents.wait(lambda: ("cancel", "a1", first) in agents.calls)
        assert agents.task(first).cancelled and job.tasks[0].agent_task_id == second
