"""The scikit-learn `mlp` workload reports its learning curve at step = epoch and trains max_iter epochs.

It used to train in warm-started fit() rounds and report at step = n_iter_, which sklearn's MLP
restarts at 0 on every fit(): every round was reported at the same step (a vertical curve) and it
stopped after 2 rounds, 2 * max_iter / 10 epochs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from tensorfleet_agent import task
from tensorfleet_agent.workloads import sklearn_basic
from tensorfleet_agent.workloads.datasets import load
from tensorfleet_agent.workloads.registry import get_workload


class Channel:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def run_mlp(workdir: Path, **params: Any) -> list[tuple[int, dict[str, float]]]:
    """Run the workload in-process on iris; the (step, values) of each metrics report."""
    schema = get_workload("mlp").schema
    options = schema.validate({k: v for k, v in params.items() if k in schema.names()})
    options.update({k: v for k, v in params.items() if k not in schema.names()})  # sklearn options past the schema
    spec = {"task_id": "t", "job_id": "j", "rank": 0, "world_size": 1, "workload": "mlp", "dataset": "iris"}
    channel = Channel()
    task._install(task.TaskContext(spec, workdir, None, channel))  # type: ignore[arg-type]
    try:
        sklearn_basic.mlp(options)
    finally:
        task._install(None)
    return [(m["step"], m["values"]) for m in channel.messages if m["t"] == "metrics"]


def test_every_epoch_is_reported_at_its_own_step_up_to_max_iter(tmp_path: Path) -> None:
    reports = run_mlp(tmp_path, max_iter=30, hidden_layer_sizes="16", tol=0.0)  # tol=0: cannot converge
    *epochs, final = reports
    steps = [step for step, _ in epochs]
    assert steps == list(range(1, 31))  # strictly increasing, one per epoch, all 30 of max_iter
    assert all("loss" in values and values["loss"] > 0 for _, values in epochs)
    tested = [step for step, values in epochs if "test_accuracy" in values]
    assert tested == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]  # ROUNDS intermediate values for a pruner
    assert final[0] == 30 and {"train_accuracy", "test_accuracy", "f1_macro", "training_time"} <= set(final[1])


def test_stops_where_sklearn_fit_converges(tmp_path: Path) -> None:
    # tol=10: no epoch after the first improves on the best loss by 10; fit() stops once more than
    # n_iter_no_change=10 epochs in a row did not: after 1 + 11 epochs
    reports = run_mlp(tmp_path, max_iter=200, hidden_layer_sizes="16", tol=10.0)
    x, y, *_ = load("iris", {})
    x_train, _, y_train, _ = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    reference = MLPClassifier(hidden_layer_sizes=(16,), max_iter=200, tol=10.0, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(x_train, y_train)
    assert reference.n_iter_ == 12
    steps = [step for step, values in reports if "loss" in values]
    assert steps == list(range(1, reference.n_iter_ + 1))
    assert reports[-1][0] == reference.n_iter_ and "train_accuracy" in reports[-1][1]
    assert np.allclose([values["loss"] for _, values in reports[:-1]], reference.loss_curve_)


def test_trained_long_enough_it_classifies_iris(tmp_path: Path) -> None:
    reports = run_mlp(tmp_path, max_iter=100, hidden_layer_sizes="16", learning_rate_init=0.01)
    step, final = reports[-1]
    assert step == max(s for s, _ in reports) == 100  # all of max_iter (it trained 20 epochs before)
    assert final["test_accuracy"] > 0.8 and final["train_accuracy"] > 0.8
    curve = [values["loss"] for _, values in reports[:-1]]
    assert curve[-1] < curve[0] / 2  # a falling learning curve
