"""Which of a bundle's trials write their model and report (task.keeps_files, TaskSpec.trial_files): under
keep_models best only a trial that ranks first among those its task ran so far, in the controller's order (a better
score, then a lower index), so the sweep's best trial always has its files and most others write none."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent import task


@pytest.fixture
def context(tmp_path: Path) -> Iterator[task.TaskContext]:
    ctx = task.TaskContext({"task_id": "t", "job_id": "j", "rank": 3, "params": {}}, tmp_path, None, None)
    task._install(ctx)
    yield ctx
    task._install(None)


def trial(ctx: task.TaskContext, index: int, rule: dict[str, Any] | None, **metrics: float) -> bool:
    ctx.spec = {**ctx.spec, "trial": index, "trial_files": rule}
    return task.keeps_files(metrics)


BEST = {"keep": "best", "metric": "test_accuracy", "maximize": True}


def test_best_keeps_only_a_trial_that_leads_the_task_so_far(context: task.TaskContext) -> None:
    kept = [
        trial(context, index, BEST, test_accuracy=value, f1_macro=0.5)
        for index, value in [(10, 0.8), (11, 0.7), (12, 0.9), (13, 0.9), (14, 0.85), (15, 0.95)]
    ]
    assert kept == [True, False, True, False, False, True]


def test_a_tie_goes_to_the_lower_index_whatever_the_order_they_ran_in(context: task.TaskContext) -> None:
    assert trial(context, 20, BEST, test_accuracy=0.9)
    assert trial(context, 7, BEST, test_accuracy=0.9)  # same score, lower index: the controller would pick it
    assert not trial(context, 8, BEST, test_accuracy=0.9)


def test_minimize_and_a_score_that_is_not_a_number(context: task.TaskContext) -> None:
    rule = {"keep": "best", "metric": "rmse", "maximize": False}
    assert trial(context, 1, rule, rmse=2.0)
    assert not trial(context, 2, rule, rmse=math.nan)  # no score: never the sweep's best
    assert not trial(context, 3, rule, rmse=3.0)
    assert trial(context, 4, rule, rmse=1.5)


def test_all_none_unset_and_a_metric_reported_elsewhere(context: task.TaskContext) -> None:
    assert trial(context, 1, None, test_accuracy=0.1)  # an older controller: every trial writes, as before
    assert trial(context, 2, {"keep": "all", "metric": "test_accuracy"}, test_accuracy=0.1)
    assert not trial(context, 3, {"keep": "none", "metric": "test_accuracy"}, test_accuracy=1.0)
    # the sweep's metric is not among these (an MLP's loss, reported epoch by epoch): the controller decides
    assert trial(context, 4, {"keep": "best", "metric": "loss"}, test_accuracy=0.1)


def test_the_tasks_own_run_does_not_defer_to_the_trials_before_it(context: task.TaskContext) -> None:
    assert trial(context, 1, BEST, test_accuracy=1.0)
    context.spec = {k: v for k, v in context.spec.items() if k != "trial"}  # the lead's own run (worker._run_one)
    assert task.keeps_files({"test_accuracy": 0.0})
    context.spec["trial_files"] = {"keep": "none", "metric": "test_accuracy"}
    assert not task.keeps_files({"test_accuracy": 1.0})  # keep_models none: nothing to keep, its own run neither


def test_the_rule_crosses_the_wire_and_an_unset_one_stays_unset() -> None:
    from tensorfleet_agent.core.codec import spec_to_dict
    from tensorfleet_agent.core.types import TaskSpec, TrialFiles
    from tensorfleet_agent.rpc import convert

    spec = TaskSpec("t", "j", "decision_tree", trial_files=TrialFiles("best", "rmse", False))
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)) == spec
    assert spec_to_dict(spec)["trial_files"] == {  # the worker's
        "keep": "best",
        "metric": "rmse",
        "maximize": False,
        "leader_index": -1,  # no trial of the sweep succeeded before it was sent
        "leader_score": 0.0,
    }
    plain = TaskSpec("t", "j", "decision_tree")
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(plain)).trial_files is None
    assert "trial_files" not in spec_to_dict(plain)  # a journal of a task of no sweep reads as before


@pytest.mark.parametrize("maximize", [True, False])
def test_the_sweeps_best_trial_always_wrote_its_files(context: task.TaskContext, maximize: bool) -> None:
    """Random bundles with many ties, run in random order: the trial the controller picks (trials.best_trial) is one
    whose worker wrote its files, and a trial that wrote none ranks behind one of its bundle."""
    import random

    from tensorfleet_desktop.controller.model import Job, JobTask, TaskRunState
    from tensorfleet_desktop.controller.trials import best_trial

    rng = random.Random(7)
    rule = {"keep": "best", "metric": "m", "maximize": maximize}
    for _ in range(200):
        scores = {index: float(rng.choice([0.5, 0.8, 0.9, 1.0, math.nan])) for index in rng.sample(range(50), 12)}
        sweep = {"metric": "m", "direction": "maximize" if maximize else "minimize"}
        job = Job("j", {"sweep": sweep}, "me", 1)
        job.tasks = [JobTask(index=i, state=TaskRunState.SUCCEEDED, metrics={"m": v}) for i, v in scores.items()]
        for bundle in (list(scores)[:6], list(scores)[6:]):
            context.leader = None  # a new task
            wrote = {index: trial(context, index, rule, m=scores[index]) for index in bundle}
            best = best_trial(job)
            if best is not None and best.index in wrote:
                assert wrote[best.index], (scores, bundle, wrote)


def test_a_trial_behind_the_sweeps_best_when_its_task_was_sent_writes_none(context: task.TaskContext) -> None:
    rule = {**BEST, "leader_index": 9, "leader_score": 0.9}  # trial 9 led the sweep when this bundle was sent
    assert not trial(context, 20, rule, test_accuracy=0.85)
    assert not trial(context, 21, rule, test_accuracy=0.9)  # a tie with a higher index: 9 stays ahead
    assert trial(context, 4, rule, test_accuracy=0.9)  # a tie with a lower index: ahead of 9
    assert trial(context, 22, rule, test_accuracy=0.95)  # better than both
    assert not trial(context, 23, rule, test_accuracy=0.92)  # behind 22, which this task ran
    context.spec = {k: v for k, v in context.spec.items() if k != "trial"}  # the task's own run (rank 3)
    assert task.keeps_files({"test_accuracy": 0.92})  # behind 22, which this task ran, but ahead of 9: it writes
    assert not task.keeps_files({"test_accuracy": 0.85})  # behind the sweep's best when sent: it never can be
    assert task.keeps_files({"test_accuracy": 0.9})  # a tie, with a lower index than 9
    assert task.keeps_files({"test_accuracy": math.nan})  # no score: its own run writes them, as it always did


def test_the_sweeps_best_so_far_goes_with_the_rule() -> None:
    from tensorfleet_agent.core.codec import spec_to_dict
    from tensorfleet_agent.core.types import TaskSpec, TrialFiles
    from tensorfleet_agent.rpc import convert
    from tensorfleet_desktop.controller.model import Job, JobTask, TaskRunState
    from tensorfleet_desktop.controller.trials import trial_files

    sweep = {"metric": "rmse", "direction": "minimize", "params": {}, "budget": 10}
    job = Job("j", {"sweep": sweep, "algorithm": "decision_tree"}, "me", 1)
    job.tasks = [JobTask(index=0, state=TaskRunState.PENDING)]
    assert trial_files(job) == TrialFiles("best", "rmse", False)  # none succeeded yet: no leader (-1)
    job.tasks += [
        JobTask(index=1, state=TaskRunState.SUCCEEDED, metrics={"rmse": 2.5}),
        JobTask(index=2, state=TaskRunState.SUCCEEDED, metrics={"rmse": 1.5}),
        JobTask(index=3, state=TaskRunState.FAILED, metrics={"rmse": 0.1}),  # not a result
    ]
    files = trial_files(job)
    assert files == TrialFiles("best", "rmse", False, leader_index=2, leader_score=1.5)
    spec = TaskSpec("t", "j", "decision_tree", trial_files=files)
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)) == spec
    assert spec_to_dict(spec)["trial_files"]["leader_index"] == 2  # what the worker's keeps_files reads
    job.spec["keep_models"] = "all"
    assert trial_files(job) == TrialFiles("all", "rmse", False)  # every trial writes: no leader needed


@pytest.mark.parametrize("maximize", [True, False])
def test_the_sweeps_best_wrote_its_files_with_bundles_sent_after_others_ended(
    context: task.TaskContext, maximize: bool
) -> None:
    """Bundles run one after another, each sent with the sweep's best so far (trials.trial_files), its riders first
    and its own run last: the trial the controller picks in the end wrote its files, and bundles sent late write
    few."""
    import random

    from tensorfleet_desktop.controller.model import Job, JobTask, TaskRunState
    from tensorfleet_desktop.controller.trials import best_trial, trial_files

    rng = random.Random(11)
    written = 0
    for _ in range(100):
        sweep = {"metric": "m", "direction": "maximize" if maximize else "minimize"}
        job = Job("j", {"sweep": sweep}, "me", 1)
        indices = rng.sample(range(60), 24)
        job.tasks = [JobTask(index=i) for i in indices]
        scores = {i: float(rng.choice([0.5, 0.8, 0.9, 1.0, math.nan])) for i in indices}
        wrote: dict[int, bool] = {}
        for start in range(0, 24, 6):
            files = trial_files(job)
            assert files is not None
            rule = {"keep": files.keep, "metric": files.metric, "maximize": files.maximize}
            rule |= {"leader_index": files.leader_index, "leader_score": files.leader_score}
            context.leader = None  # a new task
            bundle = job.tasks[start : start + 6]
            for t in bundle[:-1]:
                wrote[t.index] = trial(context, t.index, rule, m=scores[t.index])
            lead = bundle[-1]  # the task's own run comes last (worker._run_one), as its rank
            context.spec = {**{k: v for k, v in context.spec.items() if k != "trial"}, "rank": lead.index}
            wrote[lead.index] = task.keeps_files({"m": scores[lead.index]})
            for t in bundle:
                t.state, t.metrics = TaskRunState.SUCCEEDED, {"m": scores[t.index]}
        best = best_trial(job)
        assert best is None or wrote[best.index], (scores, wrote)
        written += sum(wrote.values())
    assert written < 100 * 24 / 4  # most trials wrote nothing
