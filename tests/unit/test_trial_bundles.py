"""A sweep's short trials ride in bundles (docs/architecture.md, "Trial bundles"): one agent task runs several
trials one after another; each trial's events come tagged on the bundle's stream and settle that trial alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import MetricPoint, StateChanged, TaskState, TrialEnded
from tensorfleet_desktop.controller.model import Job, JobState, TaskRunState
from tensorfleet_desktop.controller.trials import bundle_size


def tree_sweep(trials: int, **extra: Any) -> dict[str, Any]:
    sweep = {"params": {"max_depth": "int:1:10"}, "search": "random", "trials": trials, **extra}
    return {"algorithm": "decision_tree", "dataset": "iris", "sweep": sweep, "max_retries": 0}


def score(params: dict[str, Any]) -> float:
    return 0.5 + int(params["max_depth"]) / 100


def run_bundle(agents: FakeAgents, attempt: str, fail: int = -1) -> None:
    """The agent's side of one bundle: every rider's trial (tagged), then the task's own, then its end."""
    spec = agents.task(attempt).spec
    for trial in spec.trials:
        agents.send_trial(attempt, trial.index, StateChanged(TaskState.RUNNING, f"trial {trial.index}"))
        if trial.index == fail:
            agents.send_trial(attempt, trial.index, TrialEnded(False, "ValueError: max_features must be <= 4"))
            continue
        agents.send_trial(attempt, trial.index, MetricPoint(0, "test_accuracy", score(trial.params), 0.0))
        agents.send_trial(attempt, trial.index, TrialEnded(True, "", 0.003))
    agents.send(attempt, MetricPoint(0, "test_accuracy", score(spec.params), 0.0))
    agents.finish(attempt)


async def sent_bundle(agents: FakeAgents) -> tuple[str, int, list[int]]:
    """The one bundle sent so far: its attempt id, its lead's index and its riders' indexes."""
    await agents.wait(lambda: len(agents.running()) == 1)
    attempt = agents.running()[0]
    return attempt, int(attempt.split("-r")[1].split("-")[0]), [t.index for t in agents.task(attempt).spec.trials]


async def drive(agents: FakeAgents, controller: Any, job: Job, fail: int = -1) -> list[int]:
    """Run every bundle the controller sends until the sweep ends; the bundle sizes, in order."""
    sizes: list[int] = []
    done: set[str] = set()
    while not job.state.terminal:
        await until(controller, lambda: bool(set(agents.running()) - done) or job.state.terminal)
        for attempt in [a for a in agents.running() if a not in done]:
            sizes.append(1 + len(agents.task(attempt).spec.trials))
            done.add(attempt)
            run_bundle(agents, attempt, fail)
    return sizes


async def test_a_random_sweep_runs_its_trials_in_bundles_and_each_trial_is_its_own_result(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    agents.add("a2", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(64), "me")
        sizes = await drive(agents, controller, job)
        assert job.state is JobState.SUCCEEDED, job.error
        assert len(job.tasks) == 64 and sum(sizes) == 64
        assert len(sizes) < 64 / 4 and max(sizes) == 8  # 64 trials on 2 slots: 8 per bundle at first (4 rounds)
        assert all(t.state is TaskRunState.SUCCEEDED for t in job.tasks)
        for task in job.tasks:  # each trial's metric is its own params' score, wherever it ran in a bundle
            assert task.params is not None and task.metrics["test_accuracy"] == score(task.params)
        best = job.tasks[int(job.metrics["best_trial"])]
        assert best.params is not None and best.params["max_depth"] == max(t.params["max_depth"] for t in job.tasks)
        events = [e async for e in controller.watch(job.id)]
        rider = next(e for e in events if e.kind == "task_state" and "in a bundle with trial" in e.message)
        ran = [e for e in events if e.kind == "metric" and e.task_index == rider.task_index]
        assert len(ran) == 1  # its metric is recorded under its own index


async def test_a_failing_trial_in_a_bundle_fails_alone_and_the_bundle_goes_on(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(12, trials_per_task=4), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        first = agents.running()[0]
        riders = agents.task(first).spec.trials
        assert len(riders) == 3
        run_bundle(agents, first, fail=riders[1].index)
        await drive(agents, controller, job)
        assert job.state is JobState.SUCCEEDED
        assert all(job.tasks[t.index].started_at > 0 for t in riders)
        failed = job.tasks[riders[1].index]
        assert failed.state is TaskRunState.FAILED and "max_features" in failed.error
        assert sum(t.state is TaskRunState.SUCCEEDED for t in job.tasks) == 11


async def test_a_bundle_that_dies_in_a_trial_fails_that_trial_and_queues_the_rest_again(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(8, trials_per_task=4), "me")
        attempt, lead_index, riders = await sent_bundle(agents)
        lead = job.tasks[lead_index]
        first, second = riders[0], riders[1]
        agents.send_trial(attempt, first, StateChanged(TaskState.RUNNING), TrialEnded(True))
        agents.send_trial(attempt, second, StateChanged(TaskState.RUNNING))
        await until(controller, lambda: job.tasks[second].state is TaskRunState.RUNNING)
        agents.finish(attempt, TaskState.FAILED, "signal", "worker killed by SIGSEGV")
        await until(controller, lambda: job.tasks[second].state is TaskRunState.FAILED)
        assert "SIGSEGV" in job.tasks[second].error and job.tasks[first].state is TaskRunState.SUCCEEDED
        assert lead.failures == 0 and lead.state in (TaskRunState.PENDING, TaskRunState.DISPATCHED)
        assert all(job.tasks[i].failures == 0 for i in riders[2:])
        await drive(agents, controller, job)
        assert job.state is JobState.SUCCEEDED
        assert [t.index for t in job.tasks if t.state is TaskRunState.FAILED] == [second]


async def test_a_lost_agent_queues_its_whole_bundle_again_elsewhere(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(6, trials_per_task=3), "me")
        attempt, _, riders = await sent_bundle(agents)
        agents.send_trial(attempt, riders[0], StateChanged(TaskState.RUNNING))
        await until(controller, lambda: job.tasks[riders[0]].state is TaskRunState.RUNNING)
        agents.add("a2", slots=1)
        agents.lose("a1")
        await drive(agents, controller, job)
        assert job.state is JobState.SUCCEEDED and all(t.state is TaskRunState.SUCCEEDED for t in job.tasks)
        on_a2 = [a for call, node, a in agents.calls if call == "run" and node == "a2"]
        ran = {int(a.split("-r")[1].split("-")[0]) for a in on_a2}
        ran |= {t.index for a in on_a2 for t in agents.task(a).spec.trials}
        assert set(riders) <= ran and len(ran) == 6  # the lost bundle's trials ran again on a2, and the rest
        # the trial that was running there is re-placed (one replacement spent); the one that never started there
        # is only queued again
        assert [job.tasks[i].replacements for i in riders] == [1, 0]


async def test_cancelling_a_sweep_cancels_its_bundles_and_every_trial_in_them(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(6, trials_per_task=3), "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        controller.cancel(job.id)
        assert await ended(controller, job) is JobState.CANCELLED
        await agents.wait(lambda: agents.task(attempt).cancelled != "")
        assert all(t.state is TaskRunState.CANCELLED for t in job.tasks)
        assert [c for c in agents.calls if c[0] == "cancel"] == [("cancel", "a1", attempt)]


async def test_a_restarted_controller_runs_again_the_trials_that_rode_in_a_bundle(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(6, trials_per_task=3), "me")
        attempt, _, riders = await sent_bundle(agents)
        await until(controller, lambda: all(job.tasks[i].state is TaskRunState.DISPATCHED for i in riders))
    async with core(tmp_path, agents, clock) as controller:
        again = controller.machine.get(job.id)
        assert all(again.tasks[i].state is TaskRunState.PENDING for i in riders)
        agents.back("a1")  # its agent reconnects: the bundle is followed again, for its own trial
        run_bundle(agents, attempt)  # the old bundle ends: its riders' events are not followed any more
        await drive(agents, controller, again)
        assert again.state is JobState.SUCCEEDED and all(t.state is TaskRunState.SUCCEEDED for t in again.tasks)


def test_bundle_size_keeps_four_bundles_per_slot_and_small_ones_for_tpe() -> None:
    def job(search: str, budget: int, **sweep: Any) -> Job:
        spec = {"sweep": {"search": search, "budget": budget, "metric": "test_accuracy", **sweep}}
        return Job("j1", spec, "me", 1)

    assert bundle_size(job("random", 200), 2) == 25
    assert bundle_size(job("random", 10_000), 2) == 32
    assert bundle_size(job("grid", 6), 2) == 1
    assert bundle_size(job("tpe", 200), 2) == 4
    assert bundle_size(job("random", 200, prune=True), 2) == 1
    assert bundle_size(job("random", 200, trials_per_task=7), 2) == 7


async def test_trials_per_task_is_checked(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    async with core(tmp_path, agents, clock) as controller:
        for bad in (-1, 257, "4", True):
            with pytest.raises(ValidationError, match="trials_per_task"):
                await controller.submit(tree_sweep(8, trials_per_task=bad), "me")
        spec = tree_sweep(8, trials_per_task=4, prune=True, metric="test_accuracy")
        spec["algorithm"] = "gradient_boosting"
        spec["sweep"]["params"] = {"max_iter": "int:10:50"}
        with pytest.raises(ValidationError, match="pruned sweep runs one trial per task"):
            await controller.submit(spec, "me")
        with pytest.raises(ValidationError, match="sweep with a timeout runs one trial per task"):
            await controller.submit(tree_sweep(8, trials_per_task=4, timeout=60), "me")
    assert bundle_size(Job("j", {"sweep": {"search": "random", "budget": 200, "timeout": 60}}, "me", 1), 2) == 1


async def test_a_refused_bundle_puts_its_riders_back_in_the_queue(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1).refuse = "busy: no free slot"
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(6, trials_per_task=3), "me")
        await agents.wait(lambda: any(call == "refused" for call, _, _ in agents.calls))
        await until(controller, lambda: all(t.state is TaskRunState.PENDING for t in job.tasks))
        assert all(t.failures == 0 for t in job.tasks)
        agents.fleet["a1"].refuse = ""
        clock.advance(30)  # past the busy back-off
        agents.telemetry("a1", 1)
        await drive(agents, controller, job)
        assert job.state is JobState.SUCCEEDED and all(t.state is TaskRunState.SUCCEEDED for t in job.tasks)


async def test_pausing_a_sweep_queues_its_bundles_trials_and_resuming_runs_them(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(6, trials_per_task=3), "me")
        attempt, _, riders = await sent_bundle(agents)
        agents.send_trial(attempt, riders[0], StateChanged(TaskState.RUNNING))
        controller.pause(job.id)
        await agents.wait(lambda: agents.task(attempt).cancelled != "")
        assert job.state is JobState.PAUSED and all(t.state is TaskRunState.PENDING for t in job.tasks)
        agents.send_trial(attempt, riders[0], TrialEnded(True))  # the stopped bundle's late word counts for nothing
        agents.finish(attempt, TaskState.CANCELLED, "cancelled")
        controller.resume(job.id)
        await drive(agents, controller, job)
        assert job.state is JobState.SUCCEEDED and all(t.state is TaskRunState.SUCCEEDED for t in job.tasks)


async def test_each_trial_of_a_bundle_is_timed_from_its_own_start(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(3, trials_per_task=3), "me")
        attempt, lead_index, riders = await sent_bundle(agents)
        lead, first, second = (job.tasks[i] for i in (lead_index, *riders))
        for rider in (first, second):
            clock.advance(10)  # each trial takes 10 s of the bundle
            agents.send_trial(attempt, rider.index, StateChanged(TaskState.RUNNING))
            await until(controller, lambda: rider.state is TaskRunState.RUNNING)  # noqa: B023
            clock.advance(10)
            agents.send_trial(attempt, rider.index, MetricPoint(0, "test_accuracy", 0.9, 0.0), TrialEnded(True))
            await until(controller, lambda: rider.state is TaskRunState.SUCCEEDED)  # noqa: B023
            # one trial per slot shows running: the lead's own trial comes after its riders'
            assert lead.state is (TaskRunState.RUNNING if rider is second else TaskRunState.DISPATCHED)
        clock.advance(10)
        agents.send(attempt, MetricPoint(0, "test_accuracy", 0.8, 0.0))
        agents.finish(attempt)
        assert await ended(controller, job) is JobState.SUCCEEDED
        for task in (first, second, lead):  # not the time it waited for the trials before it in the bundle
            assert task.finished_at - task.started_at == 10, (task.index, task.started_at, task.finished_at)


def test_the_cli_flag_reaches_the_stored_sweep() -> None:
    from tensorfleet_desktop.cli import build_parser
    from tensorfleet_desktop.cli.jobs import spec_from_args
    from tensorfleet_desktop.controller.jobspec import parse_job_spec

    argv = ["submit", "-a", "decision_tree", "-d", "iris", "--sweep", "max_depth=int:1:4", "--search", "random"]
    spec = spec_from_args(build_parser().parse_args([*argv, "--trials-per-task", "5"]))
    assert spec["sweep"]["trials_per_task"] == 5
    stored = parse_job_spec(spec).to_dict()
    assert stored["sweep"]["trials_per_task"] == 5
    assert parse_job_spec(spec_from_args(build_parser().parse_args(argv))).to_dict()["sweep"]["trials_per_task"] == 0


@pytest.mark.parametrize("outcome", [TaskState.SUCCEEDED, TaskState.FAILED])
async def test_a_bundles_end_leaves_alone_a_trial_of_it_already_retried_elsewhere(
    tmp_path: Path, outcome: TaskState
) -> None:
    """A rider that failed in its bundle is retried as its own attempt elsewhere while the bundle runs on: neither the
    bundle's success nor its failure touches that attempt, and the failure stays the bundle's own."""
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        spec = tree_sweep(4, trials_per_task=4)
        spec["max_retries"] = 1
        job = await controller.submit(spec, "me")
        bundle, lead_index, riders = await sent_bundle(agents)
        lead, first, *rest = (job.tasks[i] for i in (lead_index, *riders))
        agents.send_trial(bundle, first.index, StateChanged(TaskState.RUNNING), TrialEnded(False, "ValueError: x"))
        await until(controller, lambda: first.state is TaskRunState.PENDING and first.failures == 1)
        clock.advance(5)  # past its back-off
        agents.add("a2", slots=1)  # a free slot: its retry goes there while the bundle runs the others
        await until(controller, lambda: first.agent_task_id.startswith(f"{job.id}-r{first.index}-"))
        retry = first.agent_task_id
        for rider in rest:
            agents.send_trial(bundle, rider.index, StateChanged(TaskState.RUNNING))
            agents.send_trial(bundle, rider.index, MetricPoint(0, "test_accuracy", 0.9, 0.0), TrialEnded(True))
        if outcome is TaskState.SUCCEEDED:
            agents.send(bundle, MetricPoint(0, "test_accuracy", 0.9, 0.0))
            agents.finish(bundle)
        else:
            agents.finish(bundle, TaskState.FAILED, "exception", "ValueError: the lead's own trial failed")
        await until(controller, lambda: lead.state in (TaskRunState.SUCCEEDED, TaskRunState.PENDING))
        await agents.wait(lambda: retry in agents.running())
        assert first.agent_task_id == retry and first.state.active and first.failures == 1
        assert agents.task(retry).cancelled == ""
        if outcome is TaskState.FAILED:
            assert lead.failures == 1 and "lead's own trial" in lead.error


async def test_after_a_restart_a_crash_in_a_rider_is_not_its_leads_failure(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(6, trials_per_task=3), "me")
        attempt, lead_index, riders = await sent_bundle(agents)
        await until(controller, lambda: all(job.tasks[i].state is TaskRunState.DISPATCHED for i in riders))
    async with core(tmp_path, agents, clock) as controller:
        again = controller.machine.get(job.id)
        agents.back("a1")
        lead = again.tasks[lead_index]
        await until(controller, lambda: attempt in controller.attempts.watchers)
        agents.send_trial(attempt, riders[0], StateChanged(TaskState.RUNNING))  # the old bundle runs a rider
        agents.finish(attempt, TaskState.FAILED, "signal", "worker killed by SIGSEGV")  # and dies in it
        await until(controller, lambda: lead.agent_task_id != attempt)
        assert lead.failures == 0 and lead.state is not TaskRunState.FAILED, (lead.state, lead.error)


async def test_the_model_of_a_best_trial_that_rode_in_a_bundle_names_the_task_that_trained_it(tmp_path: Path) -> None:
    import hashlib
    import json

    from sklearn.tree import DecisionTreeClassifier

    from tensorfleet_agent.core.types import ArtifactReady
    from tensorfleet_agent.workloads.skops_files import skops_io

    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit(tree_sweep(3, trials_per_task=3), "me")
        bundle, _, riders = await sent_bundle(agents)
        model = skops_io().dumps(DecisionTreeClassifier(max_depth=1).fit([[0], [1]], [0, 1]))

        def stored(data: bytes, kind: str, name: str) -> ArtifactReady:  # in the blob store, as if fetched
            digest = hashlib.sha256(data).hexdigest()
            path = controller.blobs.path(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return ArtifactReady(digest, len(data), kind, name)

        def files(i: int) -> tuple[ArtifactReady, ArtifactReady]:
            report = json.dumps({"dataset": "iris", "i": i}).encode()
            return stored(model + bytes([i]), "model", "model.skops"), stored(report, "report", "report.json")

        for k, i in enumerate(riders):  # the first rider is the best trial
            agents.send_trial(bundle, i, StateChanged(TaskState.RUNNING))
            agents.send_trial(bundle, i, MetricPoint(0, "test_accuracy", 0.99 - k / 100, 0.0), *files(i))
            agents.send_trial(bundle, i, TrialEnded(True))
        agents.send(bundle, MetricPoint(0, "test_accuracy", 0.5, 0.0), *files(99))
        agents.finish(bundle)
        assert await ended(controller, job, timeout=10) is JobState.SUCCEEDED, job.error
        assert int(job.metrics["best_trial"]) == riders[0] and job.model is not None
        record = await controller.registry.resolve(f"{job.model['name']}:{job.model['version']}")
        assert record["task_ids"] == [bundle]  # lineage: the agent task that trained it
