"""The controller core in process: a task that ends PREEMPTED (its machine was taken back) is queued again at once,
without spending a retry, a replacement or a back-off, resumes from its newest checkpoint, and a gang goes back as a
whole."""

from __future__ import annotations

from pathlib import Path

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import CheckpointSaved, ExitCause, TaskState
from tensorfleet_desktop.controller.model import JobState, TaskRunState

SHA = "cd" * 32
REASON = "the desk owner is back: keyboard or mouse used 0.1 s ago"


async def test_a_preempted_task_is_queued_again_at_once_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    desk = agents.add("desk")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "torch_mlp", "dataset": "iris", "max_retries": 0}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        desk.blobs.add(SHA)
        agents.send(first, CheckpointSaved(SHA, 10, 7, "ckpt"))
        agents.finish(first, TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)
        await until(controller, lambda: job.tasks[0].agent_task_id not in ("", first))  # no clock advanced
        task = job.tasks[0]
        assert (task.failures, task.replacements, task.retry_at) == (0, 0, 0.0)
        assert job.state is JobState.RUNNING
        await agents.wait(lambda: len(agents.running()) == 1)
        inputs = agents.task(agents.running()[0]).spec.inputs
        assert [(i.name, i.sha256) for i in inputs] == [("resume.ckpt", SHA)]
        agents.finish(agents.running()[0])
        assert await ended(controller, job) is JobState.SUCCEEDED
        messages = [e.message async for e in controller.watch(job.id) if e.kind == "task_state"]
        assert f"preempted: {REASON}" in messages


async def test_preemption_never_fails_a_job_however_often(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("desk")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        for _ in range(7):  # more than max_retries and the replacements budget (5 here)
            await agents.wait(lambda: len(agents.running()) == 1)
            agents.finish(agents.running()[0], TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)
            await until(controller, lambda: job.tasks[0].state is not TaskRunState.RUNNING)
        await agents.wait(lambda: len(agents.running()) == 1)
        assert job.state is JobState.RUNNING and job.tasks[0].failures == 0 and job.tasks[0].replacements == 0
        agents.finish(agents.running()[0])
        assert await ended(controller, job) is JobState.SUCCEEDED


async def test_a_preempted_rank_sends_its_whole_gang_back_to_the_queue(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    agents.add("a2")
    async with core(tmp_path, agents, clock) as controller:
        gang = await controller.submit({"algorithm": "noop", "num_workers": 2, "max_retries": 0}, "me")
        await agents.wait(lambda: len(agents.running()) == 2)
        first = {t.index: t.agent_task_id for t in gang.tasks}
        agents.finish(first[0], TaskState.CANCELLED, ExitCause.PREEMPTED, REASON)
        await agents.wait(lambda: agents.task(first[1]).cancelled != "")  # the other rank is stopped too
        await agents.wait(lambda: len(agents.running()) == 2)  # and both placed again
        assert {t.agent_task_id for t in gang.tasks}.isdisjoint(first.values())
        assert all(t.failures == 0 and t.replacements == 0 for t in gang.tasks)
        for attempt in agents.running():
            agents.finish(attempt)
        assert await ended(controller, gang) is JobState.SUCCEEDED
