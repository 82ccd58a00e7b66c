"""The controller core in process: pause and resume (at a checkpoint for workloads that can), cancel and retry,
and a controller restart that re-attaches to the attempts its agents still run."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import CheckpointSaved, MetricPoint, TaskState
from tensorfleet_desktop.controller.errors import JobError
from tensorfleet_desktop.controller.model import JobState, TaskRunState

SHA = "ab" * 32


async def test_pause_stops_the_attempt_and_resume_places_it_again(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        controller.pause(job.id)
        assert job.state is JobState.PAUSED and job.tasks[0].state is TaskRunState.PENDING
        await agents.wait(lambda: agents.task(first).cancelled == "paused by the user")
        controller.placement.schedule()
        assert job.tasks[0].agent_task_id == "", "a paused job is not placed"
        with pytest.raises(JobError, match="only paused jobs can be resumed"):
            controller.resume(controller.cancel(job.id).id)
        assert controller.get(job.id).state is JobState.CANCELLED
        controller.retry(job.id)
        await agents.wait(lambda: len(agents.running()) == 1)
        assert job.tasks[0].attempt == 2 and controller.get(job.id).state is JobState.RUNNING
        agents.finish(agents.running()[0])
        assert await ended(controller, job) is JobState.SUCCEEDED


async def test_a_torch_task_pauses_at_a_checkpoint_and_resumes_from_it(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "torch_mlp", "dataset": "iris"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        controller.pause(job.id)
        assert job.tasks[0].stopping and agents.task(first).cancelled == ""  # asked to checkpoint, not yet
        await agents.wait(lambda: agents.task(first).checkpoint_grace > 0)
        a1.blobs.add(SHA)  # the checkpoint stays in the agent's cache
        agents.send(first, CheckpointSaved(SHA, 10, 3, "ckpt"))
        agents.finish(first, TaskState.CANCELLED, "cancelled", "paused by the user")
        await until(controller, lambda: not job.tasks[0].stopping)
        assert job.tasks[0].state is TaskRunState.PENDING and job.tasks[0].failures == 0
        controller.resume(job.id)
        await agents.wait(lambda: len(agents.running()) == 1)
        inputs = agents.task(agents.running()[0]).spec.inputs
        assert [(i.name, i.sha256) for i in inputs] == [("resume.ckpt", SHA)]


async def test_a_restarted_controller_re_attaches_to_running_attempts_and_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        agents.send(attempt, MetricPoint(0, "loss", 1.0, 0.0))
        await until(controller, lambda: job.metrics.get("loss") == 1.0)
    agents.send(attempt, MetricPoint(1, "loss", 0.5, 0.0))  # while no controller watched
    again = FakeAgents()  # the same agents, dialled by the new controller
    again.fleet = agents.fleet
    async with core(tmp_path, again, clock) as controller:
        job = controller.get(job.id)
        assert job.tasks[0].state is TaskRunState.RUNNING and job.tasks[0].agent_task_id == attempt
        again.back("a1")
        await until(controller, lambda: job.metrics.get("loss") == 0.5)
        again.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert job.tasks[0].attempt == 1, "carried on, not run again"
        steps = [e.step async for e in controller.watch(job.id) if e.kind == "metric"]
        assert steps == [0, 1]


async def test_after_a_restart_an_attempt_the_controller_moved_on_from_is_cancelled(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        old = agents.running()[0]
        agents.fleet["a1"].online = False  # the controller cannot cancel it: it stays on the agent
        controller.cancel(job.id)
        controller.retry(job.id)
    agents.fleet["a1"].online = True
    again = FakeAgents()
    again.fleet = agents.fleet
    async with core(tmp_path, again, clock) as controller:
        again.back("a1")
        await again.wait(lambda: ("cancel", "a1", old) in again.calls)


async def test_a_task_whose_agent_never_comes_back_after_a_restart_runs_elsewhere(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("gone")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
    fresh = FakeAgents()  # a different fleet: "gone" is not in it
    fresh.add("a2")
    async with core(tmp_path, fresh, clock) as controller:
        job = controller.get(job.id)
        controller.placement.schedule()
        assert job.tasks[0].node_id == "gone", "an unknown agent has a grace period to come back"
        clock.advance(16)
        controller.machine.wake.set()
        await fresh.wait(lambda: len(fresh.running()) == 1)
        assert job.tasks[0].node_id == "a2" and job.tasks[0].replacements == 1 and job.tasks[0].failures == 0
