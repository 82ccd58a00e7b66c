"""A job cancelled while its RunTask is still on the way: the agent starts the task after the cancel found nothing
there ("unknown task"), so the controller cancels it again once the RunTask returns, and the agent's slot is not
left running a task nobody wants (it was: two cancelled 120 s sleeps kept a 2-agent cluster busy)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers.core_harness import core, ended
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import TaskSpec
from tensorfleet_desktop.controller.model import JobState


class SlowToAccept(FakeAgents):
    """RunTask waits at the door until the test opens it: a cancel can arrive first."""

    def __init__(self) -> None:
        super().__init__()
        self.door = asyncio.Event()
        self.knocking = asyncio.Event()

    async def run_task(self, node_id: str, spec: TaskSpec) -> None:
        self.knocking.set()
        await self.door.wait()
        await super().run_task(node_id, spec)


async def test_a_task_cancelled_while_being_sent_is_cancelled_again_once_the_agent_has_it(tmp_path: Path) -> None:
    agents, clock = SlowToAccept(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await asyncio.wait_for(agents.knocking.wait(), 10)
        attempt = job.tasks[0].agent_task_id
        controller.cancel(job.id)
        assert await ended(controller, job) is JobState.CANCELLED
        await agents.wait(lambda: ("cancel", "a1", attempt) in agents.calls)  # found nothing: not there yet
        agents.door.set()  # now the agent takes it and starts it
        await agents.wait(lambda: agents.calls.count(("cancel", "a1", attempt)) == 2)
        assert agents.calls.index(("run", "a1", attempt)) < len(agents.calls) - 1
        assert agents.fleet["a1"].tasks[attempt].ended and not agents.running()
