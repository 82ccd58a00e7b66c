"""The controller core in process: a failed task is retried after a back-off (on another agent when there is
one) until max_retries; a lost agent or worker costs no retry, its tasks run elsewhere; a gang restarts whole;
an agent that does not take a task sends it back to the queue."""

from __future__ import annotations

import functools
from pathlib import Path

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import TaskState
from tensorfleet_desktop.controller.jobs import retry_delay
from tensorfleet_desktop.controller.model import JobState, JobTask, TaskRunState


def _waiting_after(task: JobTask, failures: int) -> bool:
    return task.failures == failures and task.state is TaskRunState.PENDING


async def test_a_failed_task_is_retried_after_its_back_off_then_the_job_fails(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "max_retries": 2}, "me")
        task = job.tasks[0]
        for failures in (1, 2):
            await agents.wait(lambda: len(agents.running()) == 1)
            agents.finish(agents.running()[0], TaskState.FAILED, "exit_code", "boom")
            await until(controller, functools.partial(_waiting_after, task, failures))
            controller.placement.schedule()
            assert task.state is TaskRunState.PENDING, "placed again before its back-off"
            clock.advance(retry_delay(failures))
            controller.machine.wake.set()
        await agents.wait(lambda: len(agents.running()) == 1)
        assert task.attempt == 3
        agents.finish(agents.running()[0], TaskState.FAILED, "exit_code", "boom")
        assert await ended(controller, job) is JobState.FAILED
        assert "failed (exit_code): boom (after 3 attempt(s))" in job.error


async def test_a_retry_prefers_an_agent_the_task_has_not_failed_on(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        agents.add("a2")
        agents.finish(agents.running()[0], TaskState.FAILED, "exit_code", "boom")
        await until(controller, lambda: job.tasks[0].failures == 1)
        clock.advance(retry_delay(1))
        controller.machine.wake.set()
        await agents.wait(lambda: len(agents.running()) == 1)
        assert job.tasks[0].node_id == "a2" and job.tasks[0].failed_on == ["a1"]


async def test_a_lost_agent_costs_no_retry_its_task_runs_elsewhere(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        agents.add("a2")
        agents.lose("a1")
        await agents.wait(lambda: any(n == "a2" for call, n, _ in agents.calls if call == "run"))
        task = job.tasks[0]
        assert (task.node_id, task.attempt, task.failures, task.replacements) == ("a2", 2, 0, 1)
        agents.finish(task.agent_task_id)
        assert await ended(controller, job) is JobState.SUCCEEDED


async def test_a_worker_lost_on_its_agent_is_replaced_too_until_max_replacements(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock, max_replacements=2) as controller:
        job = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        for _ in range(3):
            await agents.wait(lambda: len(agents.running()) == 1)
            agents.finish(agents.running()[0], TaskState.FAILED, "worker_lost", "killed")
            await until(controller, lambda: job.tasks[0].state is not TaskRunState.RUNNING)
        assert await ended(controller, job) is JobState.FAILED
        assert "re-placed 2 times, giving up" in job.error and job.tasks[0].failures == 0


async def test_a_lost_rank_restarts_the_whole_gang(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    for node in ("a1", "a2"):
        agents.add(node)
    async with core(tmp_path, agents, clock) as controller:
        gang = await controller.submit({"algorithm": "noop", "num_workers": 2}, "me")
        await agents.wait(lambda: len(agents.running()) == 2)
        first = {t.index: t.agent_task_id for t in gang.tasks}
        agents.add("a3")
        lost = gang.tasks[1].node_id
        agents.lose(lost)
        await agents.wait(lambda: sum(call == "run" and a.endswith("-a2") for call, _, a in agents.calls) == 2)
        assert [t.attempt for t in gang.tasks] == [2, 2] and lost not in {t.node_id for t in gang.tasks}
        assert ("cancel", gang.tasks[0].node_id, first[0]) in agents.calls  # the surviving rank was stopped


def _refusals(agents: FakeAgents) -> list[str]:
    return [attempt for call, _, attempt in agents.calls if call == "refused"]


async def test_an_agent_that_does_not_take_a_task_sends_it_back_to_the_queue(tmp_path: Path) -> None:
    """A "busy" answer costs no retry and no attempt number, and the agent rests (0.5 s, 1 s, 2 s ... or until its
    telemetry shows a free slot) instead of being asked again several times a second."""
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1")
    a1.refuse = "0 of 1 free slot(s)"
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        task = job.tasks[0]
        for refusals, rest in ((1, 0.5), (2, 1.0), (3, 2.0)):
            await agents.wait(lambda n=refusals: len(_refusals(agents)) == n)  # type: ignore[misc]
            await until(controller, lambda: task.state is TaskRunState.PENDING)
            assert (task.attempt, task.failures, a1.placed) == (0, 0, set())
            clock.advance(rest - 0.1)
            controller.placement.schedule()
            assert task.state is TaskRunState.PENDING, f"offered again {rest - 0.1}s after refusal {refusals}"
            clock.advance(0.1)
            controller.machine.wake.set()
        await agents.wait(lambda: len(_refusals(agents)) == 4)
        await until(controller, lambda: task.state is TaskRunState.PENDING)
        agents.telemetry("a1", 0)  # still no room by its own count: the 4 s rest holds
        clock.advance(0.5)
        controller.placement.schedule()
        assert task.state is TaskRunState.PENDING
        a1.refuse = ""
        agents.telemetry("a1", 1)  # room again: the shortest rest (already over) is enough
        await agents.wait(lambda: len(agents.running()) == 1)
        assert set(_refusals(agents)) == {f"{job.id}-r0-a1"} and agents.running() == [f"{job.id}-r0-a1"]
        assert (task.attempt, task.failures, job.state) == (1, 0, JobState.RUNNING)
        agents.finish(agents.running()[0])
        assert await ended(controller, job) is JobState.SUCCEEDED


async def test_a_placement_that_may_have_reached_the_agent_is_a_new_attempt_and_is_cancelled_there(
    tmp_path: Path,
) -> None:
    """RunTask timed out: the agent may run it, so its id is not used again and the controller cancels it."""
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1")
    a1.refuse, a1.refuse_maybe_done = "deadline exceeded", True
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        task = job.tasks[0]
        await agents.wait(lambda: ("cancel", "a1", f"{job.id}-r0-a1") in agents.calls)
        assert task.stale_attempts == [f"{job.id}-r0-a1"] and task.failures == 0
        a1.refuse = ""
        clock.advance(0.5)
        controller.machine.wake.set()
        await agents.wait(lambda: len(agents.running()) == 1)
        assert agents.running() == [f"{job.id}-r0-a2"] and task.attempt == 2
