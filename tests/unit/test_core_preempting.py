"""The controller core in process, preempting for a more important job: a low-priority preemptible job fills the
agent, a high-priority one arrives; the low one's task is asked to checkpoint and stop (AgentPort.preempt), is
queued again without a retry spent, the high one runs, then the low one resumes from its checkpoint. Both jobs say
why; a gang goes whole; an equal priority or a non-preemptible job is never stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import CheckpointSaved, ExitCause, TaskState
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.model import JobState, TaskRunState
from tensorfleet_desktop.controller.placement import TICK

SHA = "ab" * 32


async def tick(controller: Controller, clock: FakeClock, seconds: float = TICK) -> None:
    """Let a scheduling tick pass (the time-based checks, preemption among them, run once a TICK)."""
    clock.advance(seconds)
    controller.machine.wake.set()
    async with asyncio.timeout(2.0):
        while controller.placement._checked_at < clock.now:  # noqa: ASYNC110  (no event says a pass ran)
            await asyncio.sleep(0.005)


async def test_a_preemptible_job_makes_room_for_a_more_important_one_and_resumes_after(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    desk = agents.add("a")
    async with core(tmp_path, agents, clock) as controller:
        low = await controller.submit(
            {"name": "low", "algorithm": "torch_mlp", "dataset": "iris", "priority": -1, "max_retries": 0}, "bob"
        )
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        desk.blobs.add(SHA)
        agents.send(first, CheckpointSaved(SHA, 10, 7, "ckpt"))
        await until(controller, lambda: any(a.kind == "checkpoint" for a in low.artifacts))
        high = await controller.submit({"algorithm": "noop", "priority": 10}, "alice")
        await tick(controller, clock)
        await agents.wait(lambda: first in agents.preempted)
        reason, grace = agents.preempted[first]
        assert reason == f"preempted by job {high.id} (noop, priority 10, alice)" and grace == 30.0
        assert high.waiting == f"preempting 1 task(s) of job {low.id} (low, priority -1) for it"
        await tick(controller, clock)  # no second round while the first one's victim still runs
        assert [c for c in agents.calls if c[0] == "preempt"] == [("preempt", "a", first)]
        assert controller.metrics.registry.get_sample_value("tensorfleet_preemptions_total") == 1.0  # Prometheus

        agents.finish(first, TaskState.CANCELLED, ExitCause.PREEMPTED, reason)
        await agents.wait(lambda: any(t.spec.job_id == high.id for t in desk.tasks.values()))
        assert low.tasks[0].state is TaskRunState.PENDING and low.tasks[0].failures == 0
        await tick(controller, clock, 1.5)  # the victim waits on, and says why
        await until(controller, lambda: low.waiting == f"preempted by job {high.id} (noop, priority 10, alice)")
        assert high.waiting == ""
        messages = [e.message async for e in controller.history(low.id) if e.kind == "task_state"]
        assert f"preempted by job {high.id} (noop, priority 10, alice): saving a checkpoint, then stopping" in messages
        assert reason in messages  # its end, as jobs.preempted records it

        agents.finish(next(a for a, t in desk.tasks.items() if t.spec.job_id == high.id))
        assert await ended(controller, high) is JobState.SUCCEEDED
        await agents.wait(lambda: len(agents.running()) == 1)
        resumed = agents.task(agents.running()[0])
        assert resumed.spec.job_id == low.id
        assert [(i.name, i.sha256) for i in resumed.spec.inputs] == [("resume.ckpt", SHA)]
        await tick(controller, clock)
        assert low.waiting == ""
        agents.finish(agents.running()[0])
        assert await ended(controller, low) is JobState.SUCCEEDED
        assert low.tasks[0].failures == 0 and low.tasks[0].replacements == 0


async def test_a_preemptible_gang_is_stopped_whole(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a")
    agents.add("b")
    async with core(tmp_path, agents, clock) as controller:
        gang = await controller.submit(
            {"algorithm": "noop", "num_workers": 2, "preemptible": True, "allow_restart": True}, "bob"
        )
        await agents.wait(lambda: len(agents.running()) == 2)
        attempts = {t.agent_task_id for t in gang.tasks}
        high = await controller.submit({"algorithm": "noop", "priority": 5}, "alice")
        await tick(controller, clock)
        await agents.wait(lambda: set(agents.preempted) == attempts)
        assert high.waiting == f"preempting 2 task(s) of job {gang.id} (noop, priority 0) for it"
        for attempt in attempts:
            agents.finish(attempt, TaskState.CANCELLED, ExitCause.PREEMPTED, agents.preempted[attempt][0])
        await agents.wait(lambda: any(agents.task(a).spec.job_id == high.id for a in agents.running()))
        assert all(t.state is TaskRunState.PENDING and t.failures == 0 for t in gang.tasks)  # back whole, waiting


async def test_never_for_an_equal_priority_a_non_preemptible_job_or_one_without_a_checkpoint(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a", slots=3)
    async with core(tmp_path, agents, clock) as controller:
        await controller.submit({"algorithm": "noop", "priority": -1, "preemptible": False}, "bob")
        await controller.submit({"algorithm": "noop", "priority": 3, "preemptible": True}, "bob")
        await controller.submit({"algorithm": "torch_mlp", "dataset": "iris", "priority": -1}, "bob")  # no checkpoint
        await agents.wait(lambda: len(agents.running()) == 3)
        waiting = await controller.submit({"algorithm": "noop", "priority": 3}, "alice")
        for _ in range(3):
            await tick(controller, clock)
        await until(controller, lambda: waiting.waiting != "", timeout=2.0)
        assert not agents.preempted and "preempting" not in waiting.waiting


async def test_never_for_a_job_its_users_quota_holds_back(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("alice", tasks=1)
        await controller.submit({"algorithm": "noop", "priority": 5}, "alice")
        low = await controller.submit({"algorithm": "noop", "priority": -1, "allow_restart": True}, "bob")
        await agents.wait(lambda: len(agents.running()) == 2)
        urgent = await controller.submit({"algorithm": "noop", "priority": 10}, "alice")
        for _ in range(3):
            await tick(controller, clock)
        assert not agents.preempted
        assert "preempting" not in urgent.waiting, urgent.waiting
        controller.quotas.set("alice", tasks=-1)  # lifted: now the low job gives way
        await tick(controller, clock)
        await agents.wait(lambda: set(agents.preempted) == {low.tasks[0].agent_task_id})
