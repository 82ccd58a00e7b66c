"""The controller core in process: placement of single tasks, the queue, gangs and constraints (the rules the
real-process scenarios in tests/integration/test_controller*.py exercise across processes)."""

from __future__ import annotations

from pathlib import Path

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import MetricPoint, Progress, TaskState
from tensorfleet_desktop.controller.model import Job, JobState, TaskRunState


async def test_a_job_runs_on_an_agent_and_its_events_become_its_history(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        changes: list[str] = []
        controller.add_job_listener(lambda job: changes.append(job.state.value))
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        assert attempt == f"{job.id}-r0-a1" and job.tasks[0].node_id == "a1"
        agents.send(attempt, Progress(0.5), MetricPoint(1, "loss", 0.25, 0.0))
        await until(controller, lambda: job.metrics.get("loss") == 0.25)
        assert job.tasks[0].progress == 0.5
        agents.send(attempt, Progress(0.5))  # a replay after a reconnect carries old seqs: here a new one
        agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert changes[0] == "QUEUED" and "RUNNING" in changes and changes[-1] == "SUCCEEDED"
        kinds = [e.kind async for e in controller.watch(job.id)]
        assert kinds.count("metric") == 1 and kinds.count("progress") == 2 and kinds[-1] == "job_state"
        assert agents.fleet["a1"].placed == set()  # the slot is free again


async def test_jobs_wait_for_a_free_slot_and_run_in_order(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        first = await controller.submit({"algorithm": "noop"}, "me")
        second = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        controller.placement.schedule()  # a pass with no free slot places nothing
        assert agents.running() == [f"{first.id}-r0-a1"] and second.state is JobState.QUEUED
        agents.finish(agents.running()[0])
        await agents.wait(lambda: agents.running() == [f"{second.id}-r0-a1"])
        agents.finish(agents.running()[0])
        assert await ended(controller, second) is JobState.SUCCEEDED


async def test_a_gang_is_placed_whole_once_every_rank_has_a_slot(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        gang = await controller.submit({"algorithm": "noop", "num_workers": 2}, "me")
        controller.placement.schedule()
        assert [t.state for t in gang.tasks] == [TaskRunState.PENDING] * 2  # one slot: no rank starts alone
        agents.add("a2")
        await agents.wait(lambda: len(agents.running()) == 2)
        assert {t.node_id for t in gang.tasks} == {"a1", "a2"}
        spec = agents.task(gang.tasks[0].agent_task_id).spec
        assert spec.world_size == 2 and spec.rendezvous is not None and spec.rendezvous.master_addr.startswith("10.")
        for attempt in agents.running():
            agents.finish(attempt)
        assert await ended(controller, gang) is JobState.SUCCEEDED


async def test_constraints_pick_the_agent(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=4)
    agents.add("a2", slots=4, zone="lab")
    async with core(tmp_path, agents, clock) as controller:
        on = await controller.submit({"algorithm": "noop", "constraints": {"on": ["a2"]}}, "me")
        labelled = await controller.submit({"algorithm": "noop", "constraints": {"labels": {"zone": "lab"}}}, "me")
        avoiding = await controller.submit({"algorithm": "noop", "constraints": {"not_on": ["a2"]}}, "me")
        await agents.wait(lambda: len(agents.running()) == 3)
        assert [j.tasks[0].node_id for j in (on, labelled, avoiding)] == ["a2", "a2", "a1"]


async def test_a_cross_validation_job_runs_its_folds_in_parallel_and_summarises_them(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=3)
    async with core(tmp_path, agents, clock) as controller:
        job: Job = await controller.submit({"algorithm": "decision_tree", "dataset": "iris", "cv": 3}, "me")
        await agents.wait(lambda: len(agents.running()) == 3)
        for i, attempt in enumerate(agents.running()):
            agents.send(attempt, MetricPoint(0, "acc", 0.5 + 0.1 * i, 0.0))
            agents.finish(attempt, TaskState.SUCCEEDED)
        assert await ended(controller, job) is JobState.SUCCEEDED
        assert abs(job.metrics["acc"] - 0.6) < 1e-9 and job.metrics["acc_std"] > 0


async def test_small_jobs_backfill_while_a_bigger_gang_waits(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    for node in ("a1", "a2"):
        agents.add(node)
    async with core(tmp_path, agents, clock) as controller:
        gang = await controller.submit({"algorithm": "noop", "num_workers": 3, "priority": 10}, "me")
        small = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        assert agents.running() == [f"{small.id}-r0-a1"] and gang.state is JobState.QUEUED
        agents.finish(agents.running()[0])
        assert await ended(controller, small) is JobState.SUCCEEDED
        agents.add("a3")
        await agents.wait(lambda: len(agents.running()) == 3)
        assert {t.node_id for t in gang.tasks} == {"a1", "a2", "a3"}


async def test_a_job_past_its_wall_clock_timeout_fails_and_its_tasks_are_cancelled(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "timeout": 30}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        clock.advance(31)
        controller.machine.wake.set()
        assert await ended(controller, job) is JobState.FAILED and job.error == "timed out after 30s"
        await agents.wait(lambda: agents.task(attempt).cancelled == "job timeout")


async def test_a_timeout_counts_a_retried_job_s_new_run_not_its_pauses_and_ends_with_its_job(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=3)
    async with core(tmp_path, agents, clock) as controller:
        timed = await controller.submit({"algorithm": "noop", "timeout": 30}, "me")
        untimed = await controller.submit({"algorithm": "noop"}, "me")
        done = await controller.submit({"algorithm": "noop", "timeout": 30}, "me")
        await agents.wait(lambda: len(agents.running()) == 3)
        agents.finish(done.tasks[0].agent_task_id)
        assert await ended(controller, done) is JobState.SUCCEEDED
        clock.advance(31)
        controller.placement.pass_once()  # a tick
        assert timed.state is JobState.FAILED and timed.error == "timed out after 30s"
        assert untimed.state is JobState.RUNNING, "no timeout: it runs on"
        assert set(controller.machine.timed) == set(), "the ended jobs' timeouts are forgotten"
        controller.retry(timed.id)  # a new run: its 30 s count from its start, not from the first run's
        await until(controller, lambda: timed.state is JobState.RUNNING)
        clock.advance(20)
        controller.placement.pass_once()
        assert timed.state is JobState.RUNNING, "retried: 20 s into its new run"
        controller.pause(timed.id)
    again = FakeAgents()
    again.fleet = agents.fleet
    async with core(tmp_path, again, clock) as controller:
        job = controller.get(timed.id)
        assert job.state is JobState.PAUSED
        clock.advance(100)  # paused time does not count toward its timeout
        controller.resume(job.id)
        again.back("a1")
        await until(controller, lambda: job.state is JobState.RUNNING)
        clock.advance(5)
        controller.placement.pass_once()
        assert job.state is JobState.RUNNING, "25 s run: 20 before its pause, 5 since"
        clock.advance(6)
        controller.placement.pass_once()
        assert job.state is JobState.FAILED and job.error == "timed out after 30s"


async def test_a_sweep_past_its_timeout_starts_no_trial_and_its_retry_runs_anew(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1).workloads = frozenset({"knn"})
    async with core(tmp_path, agents, clock) as controller:
        sweep = {"params": {"n_neighbors": "int:1:9"}, "search": "grid", "metric": "test_accuracy", "timeout": 60}
        job = await controller.submit({"algorithm": "knn", "dataset": "iris", "sweep": sweep}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        clock.advance(61)
        agents.finish(agents.running()[0], TaskState.FAILED, "error", "boom")  # its retry would start past it
        await until(controller, lambda: job.tasks[0].state is not TaskRunState.RUNNING)
        controller.placement.pass_once()
        assert job.state is JobState.FAILED and [t.error for t in job.tasks] == ["sweep timeout"]
        controller.retry(job.id)  # its 60 s count from the retry
        await until(controller, lambda: bool(job.tasks) and job.tasks[0].state is TaskRunState.RUNNING)
        assert job.state is JobState.RUNNING and not job.error


async def test_a_grid_sweep_runs_every_trial_and_keeps_the_best(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=2).workloads = frozenset({"knn"})
    async with core(tmp_path, agents, clock) as controller:
        sweep = {"params": {"n_neighbors": "int:1:3"}, "search": "grid", "metric": "test_accuracy"}
        job = await controller.submit({"algorithm": "knn", "dataset": "iris", "sweep": sweep}, "me")
        scores = {1: 0.9, 2: 0.95, 3: 0.8}
        while not job.state.terminal:
            await until(controller, lambda: bool(agents.running()) or job.state.terminal)
            for attempt in agents.running():
                k = int(agents.task(attempt).spec.params["n_neighbors"])
                agents.send(attempt, MetricPoint(0, "test_accuracy", scores[k], 0.0))
                agents.finish(attempt)
            await until(controller, lambda: not agents.running() or job.state.terminal)
        assert job.state is JobState.SUCCEEDED and len(job.tasks) == 3
        best = job.tasks[int(job.metrics["best_trial"])]
        assert job.metrics["test_accuracy"] == 0.95 and best.params is not None and best.params["n_neighbors"] == 2
