from __future__ import annotations

from pathlib import Path

import pytest

from tensorfleet_desktop.controller.jobspec import JobSpecError, load_job_file, parse_job_spec


def test_seed_defaults() -> None:
    rf = parse_job_spec({"algorithm": "random_forest", "dataset": "iris"})
    assert rf.hyperparameters == {"n_estimators": 100, "max_depth": None, "min_samples_split": 2, "random_state": 42}
    assert rf.name == "random_forest-iris" and rf.max_retries == 2 and rf.num_workers == 1
    svm = parse_job_spec({"algorithm": "svm", "dataset": "wine"})
    assert svm.hyperparameters == {"kernel": "rbf", "C": 1.0, "gamma": "scale", "random_state": 42}
    lr = parse_job_spec({"algorithm": "logistic_regression", "dataset": "wine"})
    assert lr.hyperparameters == {"max_iter": 1000, "C": 1.0, "random_state": 42}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "algorithm"),
        ({"algorithm": 3}, "algorithm"),
        ({"algorithm": "noop", "gpus": -1}, "gpus"),
        ({"algorithm": "noop", "num_workers": True}, "num_workers"),
        ({"algorithm": "noop", "max_retries": 101}, "max_retries"),
        ({"algorithm": "noop", "timeout": "soon"}, "timeout"),
        ({"algorithm": "noop", "constraints": {"near": "x"}}, "constraints.near"),
        ({"algorithm": "noop", "constraints": {"labels": {"a": 1}}}, "constraints.labels"),
        ({"algorithm": "noop", "constraints": {"on": [""]}}, "constraints.on"),
        ({"algorithm": "noop", "hyperparameters": [1]}, "hyperparameters"),
        ({"algorithm": "noop", "sweep": {"x": "1,2"}}, "sweep.x"),
        ({"algorithm": "noop", "name": "x" * 300}, "name"),
    ],
)
def test_errors_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(JobSpecError) as err:
        parse_job_spec(body)
    assert err.value.field == field


def test_constraints_normalised() -> None:
    spec = parse_job_spec({"algorithm": "noop", "constraints": {"on": "box-1", "labels": {"rack": "a"}}})
    assert spec.to_dict()["constraints"] == {"on": ["box-1"], "not_on": [], "labels": {"rack": "a"}}


def test_job_files(tmp_path: Path) -> None:
    good = tmp_path / "job.yaml"
    good.write_text("algorithm: svm\ndataset: iris\nhyperparameters: {C: 2.5}\n")
    assert parse_job_spec(load_job_file(good)).hyperparameters["C"] == 2.5
    (tmp_path / "job.json").write_text('{"algorithm": "noop"}')
    assert load_job_file(tmp_path / "job.json") == {"algorithm": "noop"}
    with pytest.raises(JobSpecError, match="cannot read"):
        load_job_file(tmp_path / "nope.yaml")


def test_cross_validation_spec() -> None:
    assert parse_job_spec({"algorithm": "svm", "dataset": "iris", "cv": 5}).cv == 5
    with pytest.raises(JobSpecError, match="scikit-learn"):
        parse_job_spec({"algorithm": "sleep", "cv": 3})
    with pytest.raises(JobSpecError, match="between 2 and 50"):
        parse_job_spec({"algorithm": "svm", "dataset": "iris", "cv": 1})
    with pytest.raises(JobSpecError, match="num_workers"):
        parse_job_spec({"algorithm": "svm", "dataset": "iris", "cv": 3, "num_workers": 2})


def test_cv_summary_is_mean_and_std() -> None:
    from tensorfleet_desktop.controller.jobs import cv_summary

    summary = cv_summary([{"acc": 0.8, "t": 1.0}, {"acc": 1.0, "t": 3.0}])
    assert summary == pytest.approx({"acc": 0.9, "acc_std": 0.1, "t": 2.0, "t_std": 1.0})


def test_sweep_specs() -> None:
    spec = parse_job_spec(
        {
            "algorithm": "svm",
            "dataset": "iris",
            "sweep": {"params": {"C": "float:0.01:100:log", "kernel": "linear,rbf"}, "trials": 6},
        }
    )
    assert spec.sweep is not None and spec.sweep["budget"] == 6 and spec.sweep["metric"] == "test_accuracy"
    grid = parse_job_spec(
        {
            "algorithm": "knn",
            "dataset": "diabetes",
            "sweep": {"params": {"n_neighbors": "int:1:4", "weights": "uniform,distance"}, "search": "grid"},
        }
    )
    assert grid.sweep is not None and grid.sweep["budget"] == 8 and grid.sweep["metric"] == "r2"


@pytest.mark.parametrize(
    ("sweep", "field"),
    [
        ({"params": {"gamma_x": "1,2"}}, "sweep.params.gamma_x"),
        ({"params": {"C": "float:5:1"}}, "sweep.params.C"),
        ({"params": {"C": "float:0:1:log"}}, "sweep.params.C"),
        ({"params": {"kernel": "linear,cubic"}}, "sweep.params.kernel"),
        ({"params": {"C": "float:0.1:1"}, "search": "grid"}, "sweep.params.C"),
        ({"params": {"C": "float:0.1:1"}, "search": "bayes"}, "sweep.search"),
        ({"params": {"C": "float:0.1:1"}, "trials": 0}, "sweep.trials"),
        ({"params": {"C": "float:0.1:1"}, "metric": "r2"}, "sweep.metric"),
        ({"params": {}}, "sweep.params"),
        ({"params": {"C": "0.5"}}, "sweep.params.C"),
        ({"params": {"C": "float:0.1:1"}, "prune": True}, "sweep.prune"),  # an SVM reports once
        ({"params": {"C": "float:0.1:1"}, "prune": "yes"}, "sweep.prune"),
    ],
)
def test_bad_sweeps_name_the_field(sweep: dict[str, object], field: str) -> None:
    with pytest.raises(JobSpecError) as err:
        parse_job_spec({"algorithm": "svm", "dataset": "iris", "sweep": sweep})
    assert err.value.field == field, err.value


def test_study_asks_within_the_space_and_learns() -> None:
    from tensorfleet_agent.workloads.registry import get_workload
    from tensorfleet_desktop.controller.sweep import Study, parse_sweep

    spec = parse_sweep(
        {"params": {"C": "float:0.01:10:log", "kernel": "linear,rbf"}, "trials": 8},
        get_workload("svm"),
        regression=False,
    )
    study = Study(spec)
    for key in range(8):
        params = study.ask(key)
        assert 0.01 <= params["C"] <= 10 and params["kernel"] in ("linear", "rbf")
        study.tell(key, 1.0 - abs(params["C"] - 1.0) / 10)
    grid = Study(parse_sweep({"params": {"kernel": "linear,rbf,poly"}, "search": "grid"}, get_workload("svm"), False))
    assert sorted(grid.ask(k)["kernel"] for k in range(3)) == ["linear", "poly", "rbf"]


def test_pruning_stops_a_trial_that_trails_the_completed_ones() -> None:
    from tensorfleet_agent.workloads.registry import get_workload
    from tensorfleet_desktop.controller.sweep import Study, parse_sweep

    with pytest.raises(JobSpecError) as err:
        parse_job_spec(
            {
                "algorithm": "mlp",
                "dataset": "iris",
                "sweep": {"params": {"alpha": "float:0.001:1"}, "prune": True, "metric": "train_accuracy"},
            }
        )
    assert err.value.field == "sweep.prune" and "only known at the end" in err.value.message
    spec = parse_sweep(
        {"params": {"learning_rate": "float:0.001:1:log"}, "trials": 12, "prune": True},
        get_workload("gradient_boosting"),
        regression=False,
    )
    study = Study(spec)
    for key in range(3):
        study.ask(key)
        for step in (10, 20, 30):
            assert study.report(key, step, 0.8 + step / 1000) is False  # nothing to compare with yet
        study.tell(key, 0.83)
    study.ask(3)
    assert study.report(3, 10, 0.95) is False  # ahead of the others
    study.ask(4)
    assert study.report(4, 10, 0.4) is True  # far behind at the same step
    study.prune(4)
    assert study.report(4, 20, 0.9) is False  # a pruned trial is closed
