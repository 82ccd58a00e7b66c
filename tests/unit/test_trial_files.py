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


def test_the_tasks_own_run_always_writes(context: task.TaskContext) -> None:
    assert trial(context, 1, BEST, test_accuracy=1.0)
    context.spec = {k: v for k, v in context.spec.items() if k != "trial"}  # the lead's own run (worker._run_one)
    assert task.keeps_files({"test_accuracy": 0.0})
    context.spec["trial_files"] = {"keep": "none", "metric": "test_accuracy"}
    assert not task.keeps_files({"test_accuracy": 1.0})  # keep_models none: nothing to keep, its own run neither
