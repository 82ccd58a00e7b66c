"""A sweep's trials bundled into one task (TaskSpec.trials, issue 21), on a real agent on loopback: each trial runs in
the task's worker, its events tagged with its index, framed by StateChanged RUNNING and TrialEnded; a failing trial
does not stop the next; a cancel or a crash ends the whole task."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from helpers.agents import AgentProcess
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BundledTrial,
    Finished,
    LogLine,
    MetricPoint,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
    TrialEnded,
)
from tensorfleet_agent.rpc.client import AgentClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    shared = AgentProcess(tmp_path_factory.mktemp("bundles") / "agent").start()
    yield shared
    shared.stop()


async def run(client: AgentClient, spec: TaskSpec) -> list[TaskEvent]:
    await client.run_task(spec)
    return [e async for e in client.watch_task(spec.task_id)]


def tree_bundle(task_id: str, *trials: dict[str, object], params: dict[str, object] | None = None) -> TaskSpec:
    bundled = tuple(BundledTrial(10 + k, dict(p)) for k, p in enumerate(trials))
    return TaskSpec(task_id, "j-" + task_id, "decision_tree", params or {}, dataset="iris", trials=bundled)


def of_trial(events: list[TaskEvent], index: int) -> list[TaskEvent]:
    return [e for e in events if e.trial == index]


def artifacts(events: list[TaskEvent], kind: str) -> list[tuple[int, ArtifactReady]]:
    return [(e.trial, e.payload) for e in events if isinstance(e.payload, ArtifactReady) and e.payload.kind == kind]


def metric(events: list[TaskEvent], name: str) -> float:
    (value,) = [e.payload.value for e in events if isinstance(e.payload, MetricPoint) and e.payload.name == name]
    return value


async def test_each_trial_runs_in_the_worker_with_its_events_tagged(agent: AgentProcess, tmp_path: Path) -> None:
    spec = tree_bundle("b3", {"max_depth": 1}, {"max_depth": 2}, {"max_depth": None}, params={"max_depth": 3})
    async with agent.client() as client:
        accepted = await client.run_task(spec)
        events = [e async for e in client.watch_task(spec.task_id)]
        (last,) = [e.payload for e in events if isinstance(e.payload, Finished)]
        assert last.status is TaskState.SUCCEEDED, events
        assert events[-1].trial == -1

        # in order: the task's RUNNING, trials 10, 11, 12 one after another, then the task's own run
        order = [e.trial for e in events]
        runs = [t for i, t in enumerate(order) if i == 0 or order[i - 1] != t]
        assert runs == [-1, 10, 11, 12, -1], runs
        for index in (10, 11, 12):
            trial = of_trial(events, index)
            first, end = trial[0].payload, trial[-1].payload
            assert first == StateChanged(TaskState.RUNNING, f"trial {index}")
            assert isinstance(end, TrialEnded) and end.ok and end.error == "" and 0 < end.duration_seconds < 30
            assert sum(isinstance(e.payload, TrialEnded) for e in trial) == 1
            kinds = {e.payload.kind for e in trial if isinstance(e.payload, ArtifactReady)}
            assert kinds == {"model", "report"}
            assert any(isinstance(e.payload, LogLine) and "DecisionTreeClassifier" in e.payload.line for e in trial)
        # each trial trained with its own params: a stump is worse than a full tree, and each has its own model
        accuracy = {i: metric(of_trial(events, i), "train_accuracy") for i in (10, 11, 12, -1)}
        assert accuracy[10] < accuracy[11] < accuracy[12] == 1.0, accuracy
        models = {trial: artifact.sha256 for trial, artifact in artifacts(events, "model")}
        assert len(set(models.values())) == 4, models
        # a trial's report says what it trained: its own params' model and metrics
        ((_, report),) = artifacts(of_trial(events, 10), "report")
        await client.get_blob(report.sha256, tmp_path / "report.json")
        body = json.loads((tmp_path / "report.json").read_text())
        assert body["metrics"]["train_accuracy"] == accuracy[10] and body["dataset"] == "iris"
        # one reproducibility line for the bundle, with each trial's seed
        (line,) = [e.payload.line for e in events if isinstance(e.payload, LogLine) and "reproduc" in e.payload.line]
        assert '"10":{"random_state":42}' in line and '"12":{"random_state":42}' in line

        # RunTask is idempotent for a bundle too: the same spec again is the same task, not a clash of ids
        assert await client.run_task(spec) == accepted


async def test_a_failing_trial_ends_alone_and_the_next_one_runs(agent: AgentProcess) -> None:
    # min_samples_split beyond a C index passes the schema (no maximum) and scikit-learn's checks, and raises in fit
    spec = tree_bundle("bfail", {"max_depth": 1}, {"min_samples_split": 10**30}, {"max_depth": 2})
    async with agent.client() as client:
        events = await run(client, spec)
    assert events[-1].payload.status is TaskState.SUCCEEDED, events  # type: ignore[union-attr]
    ended = {e.trial: e.payload for e in events if isinstance(e.payload, TrialEnded)}
    assert ended[10].ok and ended[12].ok, ended
    failed = ended[11]
    assert not failed.ok and failed.error.startswith("OverflowError: "), failed
    traceback = [e.payload.line for e in of_trial(events, 11) if isinstance(e.payload, LogLine)]
    assert any(line.startswith("Traceback") for line in traceback) and "OverflowError" in traceback[-1], traceback
    assert of_trial(events, 11)[-1].payload == failed  # the traceback before its TrialEnded
    assert metric(of_trial(events, 12), "train_accuracy") > 0.9


async def test_a_crash_in_a_trial_ends_the_whole_task(agent: AgentProcess) -> None:
    trials = (
        BundledTrial(0, {"mode": "exception", "message": "first"}),
        BundledTrial(1, {"mode": "exit", "code": 7}),
        BundledTrial(2, {"mode": "exception"}),
    )
    async with agent.client() as client:
        events = await run(client, TaskSpec("bcrash", "j", "fail", {}, trials=trials))
    last = events[-1].payload
    assert isinstance(last, Finished) and last.status is TaskState.FAILED and last.exit_cause == "exit_code", last
    ended = {e.trial: e.payload for e in events if isinstance(e.payload, TrialEnded)}
    assert list(ended) == [0] and ended[0].error == "RuntimeError: first"
    assert not of_trial(events, 2)  # never started


async def stopped_in_trial(
    client: AgentClient, spec: TaskSpec, trial: int, stop: Callable[[], Awaitable[bool]], within: float
) -> tuple[list[TaskEvent], float]:
    """Run the bundle, call `stop` once `trial` has started, then follow the task to its end (at most `within` s):
    every event, and the seconds from the stop to the end."""
    await client.run_task(spec)
    events: list[TaskEvent] = []
    async with asyncio.timeout(30):
        async for event in client.watch_task(spec.task_id):
            events.append(event)
            if event.trial == trial and isinstance(event.payload, StateChanged):
                break
    start = time.monotonic()
    assert await stop()
    async with asyncio.timeout(within):
        events += [e async for e in client.watch_task(spec.task_id, after_seq=events[-1].seq)]
    return events, time.monotonic() - start


async def test_cancel_mid_bundle_ends_the_task_at_once(agent: AgentProcess) -> None:
    trials = tuple(BundledTrial(i, {"seconds": 30.0}) for i in range(3))
    spec = TaskSpec("bcancel", "j", "sleep", {"seconds": 30.0}, trials=trials)
    async with agent.client() as client:
        events, took = await stopped_in_trial(client, spec, 0, lambda: client.cancel_task(spec.task_id, "enough"), 15)
    last = events[-1].payload
    assert isinstance(last, Finished) and last.status is TaskState.CANCELLED and last.exit_cause == "cancelled", last
    assert events[-1].trial == -1 and took < 10, took  # not the 30 s trial, nor the two after it
    assert not any(isinstance(e.payload, TrialEnded) for e in events)  # the trial cut short gets none
    assert {e.trial for e in events} <= {-1, 0}  # trials 1 and 2 never started


async def test_the_tasks_timeout_covers_the_whole_bundle(agent: AgentProcess) -> None:
    trials = tuple(BundledTrial(i, {"seconds": 1.0}) for i in range(5))  # 5 s in all, more than the 1.5 s allowed
    spec = TaskSpec("btimeout", "j", "sleep", {"seconds": 0.0}, timeout_seconds=1.5, trials=trials)
    async with agent.client() as client:
        events = await run(client, spec)
    last = events[-1].payload
    assert isinstance(last, Finished) and last.status is TaskState.FAILED and last.exit_cause == "timeout", last
    ended = [e.trial for e in events if isinstance(e.payload, TrialEnded)]
    assert 1 <= len(ended) <= 2 and ended == list(range(len(ended))), ended  # the trial running then gets none
    assert not of_trial(events, 4)


async def test_a_pause_mid_bundle_lets_the_trial_end_and_starts_no_more(agent: AgentProcess) -> None:
    """A pause (cancel with a checkpoint grace) asks the worker to stop: a bundle stops between two trials, the
    running one ending first (it may be nearly done), and the task ends stopped, not killed at the grace's end."""
    trials = tuple(BundledTrial(i, {"seconds": 1.0}) for i in range(4))
    spec = TaskSpec("bpause", "j", "sleep", {"seconds": 30.0}, trials=trials)
    async with agent.client() as client:
        events, took = await stopped_in_trial(
            client, spec, 1, lambda: client.cancel_task(spec.task_id, "pausing", checkpoint_grace=20), 25
        )
    last = events[-1].payload
    assert isinstance(last, Finished) and last.status is TaskState.CANCELLED and last.exit_cause == "stopped", last
    ended = [e.trial for e in events if isinstance(e.payload, TrialEnded) and e.payload.ok]
    assert ended == list(range(len(ended))) and 2 <= len(ended) < 4, ended  # trial 1 (or the next) ran to its end
    assert last.error == f"stopped on request before trial {len(ended)}" and took < 10, (last, took)
    assert all(not of_trial(events, i) for i in range(len(ended), 4))  # none started after


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (tree_bundle("r1", {"max_depth": 2}, {"max_depth": 0}), "spec.trials[1].params_json.max_depth", ">= 1"),
        (tree_bundle("r2", {"depth": 2}), "spec.trials[0].params_json.depth", "unknown parameter"),
        (
            TaskSpec("r3", "j", "torch_mlp", {}, dataset="iris", trials=(BundledTrial(0, {}),)),
            "spec.trials",
            "'torch_mlp' is a torch workload",
        ),
        (
            TaskSpec("r4", "j", "noop", {}, trials=tuple(BundledTrial(i, {}) for i in range(257))),
            "spec.trials",
            "257 trials; at most 256",
        ),
        (
            TaskSpec("r5", "j", "noop", {}, trials=(BundledTrial(3, {}), BundledTrial(3, {}))),
            "spec.trials[1].index",
            "used by another trial",
        ),
        (TaskSpec("r6", "j", "noop", {}, trials=(BundledTrial(-1, {}),)), "spec.trials[0].index", "negative"),
    ],
)
async def test_run_task_refuses_a_bad_bundle(agent: AgentProcess, spec: TaskSpec, field: str, words: str) -> None:
    async with agent.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.run_task(spec)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(err.value.details()) and words in str(err.value.details()), err.value.details()
        assert spec.task_id not in {t.task_id for t in await client.list_tasks(include_finished=True)}


async def test_a_bundle_of_100_trees_costs_a_few_ms_per_trial(agent: AgentProcess) -> None:
    """The point of bundling: RunTask to Finished for 100 trials in one task, against ~120 ms a task alone."""
    trials = tuple(BundledTrial(i, {"max_depth": 1 + i % 6, "random_state": i}) for i in range(100))
    spec = TaskSpec("b100", "j", "decision_tree", {}, dataset="iris", trials=trials)
    async with agent.client() as client:
        start = time.monotonic()
        events = await run(client, spec)
        took = time.monotonic() - start
    ended = [e for e in events if isinstance(e.payload, TrialEnded)]
    assert [e.trial for e in ended] == list(range(100)) and all(e.payload.ok for e in ended)  # type: ignore[union-attr]
    assert events[-1].payload.status is TaskState.SUCCEEDED  # type: ignore[union-attr]
    print(f"100 bundled trials: {took:.2f} s RunTask -> Finished, {took * 10:.1f} ms per trial")
    assert took < 60  # generous (a 2-core box shared at load 10-20); the figure is the point


async def test_the_blob_cache_stays_in_bounds_under_a_bundles_artifacts(tmp_path: Path) -> None:
    """The artifacts of a bundle's trials come a few ms apart: the agent counts them in its blob cache in one pass
    for many (a pass lists the whole cache), yet still evicts the least recently used back into bounds."""
    limit = 64 << 10
    agent = AgentProcess(tmp_path / "agent", extra_args=["--blob-cache-gb", str(limit / 2**30)]).start()
    try:
        trials = tuple(BundledTrial(i, {"bytes": 8 << 10}) for i in range(40))
        async with agent.client() as client:
            events = await run(client, TaskSpec("bblobs", "j", "artifact", {"bytes": 8 << 10}, trials=trials))
        written = [e.payload.sha256 for e in events if isinstance(e.payload, ArtifactReady)]
        assert len(set(written)) == 41 and events[-1].payload.status is TaskState.SUCCEEDED  # type: ignore[union-attr]
        blobs = tmp_path / "agent" / "blobs"

        def cached() -> list[Path]:
            return [p for p in blobs.glob("??/*") if not p.name.startswith(".")]

        deadline = time.monotonic() + 10
        while sum(p.stat().st_size for p in cached()) > limit and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # (files on disk: nothing to wait on)
        kept = {p.name for p in cached()}
        assert sum(p.stat().st_size for p in cached()) <= limit, len(kept)
        assert kept == set(written[-len(kept) :]), sorted(written.index(k) for k in kept)  # least recently used first
    finally:
        agent.stop()
