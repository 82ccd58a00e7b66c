"""Training on real agents: datasets from the CLI, cross-validation folds, Optuna and grid sweeps (pruned too),
resubmits, two-rank DDP, pausing a gang at a checkpoint."""

from __future__ import annotations

import time

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def test_synthetic_and_regression_datasets_from_the_cli(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "gradient_boosting",
            "--dataset",
            "make_classification",
            "--dataset-param",
            "n_samples=400",
            "--dataset-param",
            "n_features=10",
            "--dataset-param",
            "n_classes=3",
            "--param",
            "max_iter=30",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and {"test_accuracy", "f1_macro"} <= set(job["metrics"])
    with Client(controller.address) as client:
        assert client.job(job["id"])["spec"]["dataset_params"]["n_samples"] == 400
    job = cli_json(controller.cli("submit", "--algorithm", "knn", "--dataset", "diabetes", "--wait", "--json"))
    assert job["state"] == "SUCCEEDED" and {"r2", "rmse", "mae"} <= set(job["metrics"])
    listed = cli_json(controller.cli("algorithms", "--json"))
    by_name = {w["name"]: w for w in listed}
    assert "diabetes" not in by_name["logistic_regression"]["datasets"] and "diabetes" in by_name["knn"]["datasets"]


def test_cross_validation_folds_run_as_parallel_tasks(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _agents = shared_cluster
    job = cli_json(controller.cli("submit", "--algorithm", "svm", "--dataset", "iris", "--cv", "4", "--wait", "--json"))
    assert job["state"] == "SUCCEEDED" and job["tasks"]["total"] == 4 and job["tasks"]["completed"] == 4
    assert 0.8 < job["metrics"]["test_accuracy"] <= 1.0 and "test_accuracy_std" in job["metrics"]
    with Client(controller.address) as client:
        detail = client.job(job["id"])
        assert len({t["node_id"] for t in detail["task_list"]}) == 2  # folds spread over both agents
        reports = [a for a in detail["artifacts"] if a["kind"] == "report"]
        assert sorted(a["task_index"] for a in reports) == [0, 1, 2, 3]


def test_optuna_sweep_of_12_trials_on_2_agents(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "svm",
            "--dataset",
            "wine",
            "--sweep",
            "C=float:0.01:100:log",
            "--sweep",
            "kernel=linear,rbf",
            "--search",
            "tpe",
            "--trials",
            "12",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["tasks"]["total"] == 12 and job["progress"] == 1.0
    trials = cli_json(controller.cli("trials", job["id"], "--json"))
    rows = trials["trials"]
    assert len(rows) == 12 and trials["metric"] == "test_accuracy"
    assert all(0.01 <= r["params"]["C"] <= 100 and r["params"]["kernel"] in ("linear", "rbf") for r in rows)
    scores = [r["score"] for r in rows if r["state"] == "SUCCEEDED"]
    best = rows[int(trials["best_trial"])]
    assert best["score"] == max(scores) == job["metrics"]["test_accuracy"]
    assert len({r["agent"] for r in rows}) == 2  # trials ran in parallel on both agents
    text = controller.cli("trials", job["id"])
    assert text.returncode == 0 and "TEST_ACCURACY" in text.stdout


def test_resubmit_reproduces_a_job(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "random_forest", "dataset": "wine", "hyperparameters": {"n_estimators": 25}})
        first = client.wait(job["id"], timeout=120)
        again = client.wait(client.resubmit(first["id"])["id"], timeout=120)
        assert first["state"] == again["state"] == "SUCCEEDED"
        scores = [{k: v for k, v in j["metrics"].items() if k != "training_time"} for j in (first, again)]
        assert scores[0] == scores[1] and scores[0]["f1_macro"] > 0  # same seeds, data and library versions
        records = [
            next(r["line"] for r in client.logs(j["id"]) if r["line"].startswith("reproducibility:"))
            for j in (first, again)
        ]
    assert '"scikit-learn": ' in records[0] and '"random_state": 42' in records[0]
    assert records[0].split(" attempt ")[0] == records[1].split(" attempt ")[0]


def test_pruned_sweep_stops_trailing_trials_early(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    """Gradient boosting reports test accuracy after each round; trials far behind the median are stopped."""
    controller, _ = shared_cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "gradient_boosting",
            "--dataset",
            "make_classification",
            "--dataset-param",
            "n_samples=3000",
            "--param",
            "max_iter=60",
            "--sweep",
            "learning_rate=float:0.000001:0.5:log",
            "--search",
            "random",
            "--trials",
            "12",
            "--prune",
            "--wait",
            "--json",
            timeout=300,
        )
    )
    assert job["state"] == "SUCCEEDED"
    rows = cli_json(controller.cli("trials", job["id"], "--json"))["trials"]
    assert any(r["state"] == "PRUNED" for r in rows), rows
    with Client(controller.address) as client:
        detail = client.job(job["id"])
        curves = client.metrics(job["id"], ("test_accuracy",))
    assert detail["spec"]["sweep"]["prune"] is True
    curve = {
        t["index"]: {p["step"]: p["value"] for p in curves if p["task_index"] == t["index"]}
        for t in detail["task_list"]
    }
    completed = [curve[t["index"]] for t in detail["task_list"] if t["state"] == "SUCCEEDED"]
    pruned_at = []
    for rank in detail["task_list"]:
        if rank["exit_cause"] == "pruned":
            step = max(curve[rank["index"]])
            assert f"pruned at step {step}" in rank["error"]  # no point stored after the verdict
            assert any(c[step] > curve[rank["index"]][step] for c in completed)  # behind a finished trial there
            pruned_at.append(step)
        else:
            assert {6, 12, 60} <= set(curve[rank["index"]])  # one point per round of 6 iterations
    # The median pruner judges only once 3 trials have finished, so a trial running while the third one ends may
    # be judged first at its last round (Optuna's rule, timing-dependent); the trials that start later and trail
    # are stopped early, which is the compute pruning saves.
    assert min(pruned_at) < 60, pruned_at


def test_grid_sweep_on_a_regression_dataset(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "knn",
            "--dataset",
            "diabetes",
            "--sweep",
            "n_neighbors=int:3:5",
            "--sweep",
            "weights=uniform,distance",
            "--search",
            "grid",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["tasks"]["total"] == 6
    rows = cli_json(controller.cli("trials", job["id"], "--json"))["trials"]
    assert sorted((r["params"]["n_neighbors"], r["params"]["weights"]) for r in rows) == [
        (n, w) for n in (3, 4, 5) for w in ("distance", "uniform")
    ]
    assert job["metrics"]["r2"] == max(r["score"] for r in rows)


def test_two_rank_ddp_across_two_agents(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "cnn",
            "--dataset",
            "digits",
            "--workers",
            "2",
            "--param",
            "epochs=3",
            "--wait",
            "--json",
            timeout=300,
        )
    )
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        detail = client.job(job["id"])
    ranks = detail["task_list"]
    assert len({t["node_id"] for t in ranks}) == 2  # one rank per agent
    checksums = [t["metrics"]["param_checksum"] for t in ranks]
    assert checksums[0] == checksums[1]  # DDP kept the parameters identical
    assert detail["metrics"]["test_accuracy"] > 0.7 and detail["metrics"]["epoch"] == 3.0
    kinds = sorted(a["kind"] for a in detail["artifacts"])
    assert kinds == ["model", "model_config"]  # saved once, by rank 0


def test_pausing_a_gang_checkpoints_mid_epoch_and_resume_continues_from_there(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        job = client.submit(
            {
                "algorithm": "torch_mlp",
                "dataset": "digits",
                "num_workers": 2,
                "hyperparameters": {"epochs": 12, "checkpoint_every": 0, "batch_size": 16},
            }
        )
        wait_until(lambda: any(p["value"] >= 2 for p in client.metrics(job["id"], ("epoch",))), 120, "2 epochs")
        paused_at = time.time()
        assert cli_json(controller.cli("pause", job["id"], "--json"))["state"] == "PAUSED"
        paused = wait_until(
            lambda: (
                (j := client.job(job["id"]))
                and all(t["state"] == "PENDING" for t in j["task_list"])
                and any(a["kind"] == "checkpoint" for a in j["artifacts"])
                and j
            ),
            60,
            "both ranks stopped at a checkpoint",
        )
        (checkpoint,) = [a for a in paused["artifacts"] if a["kind"] == "checkpoint"]
        for rank in paused["task_list"]:  # each rank said where it stopped, and it was not a failure
            assert rank["exit_cause"] == "stopped" and f"(step {checkpoint['step']})" in rank["error"], rank
        controller.after_scheduler_passes()  # while paused nothing is placed or runs: no new loss points
        paused = client.job(job["id"])
        assert all(t["state"] == "PENDING" and t["attempt"] == 1 for t in paused["task_list"]), paused
        steps_before = {p["step"] for p in client.metrics(job["id"], ("loss",))}
        assert max(steps_before) == checkpoint["step"]
        assert paused["state"] == "PAUSED" and time.time() - paused_at < 30

        client.resume(job["id"])
        final = client.wait(job["id"], timeout=300)
        assert final["state"] == "SUCCEEDED", final
        assert [t["attempt"] for t in final["task_list"]] == [2, 2]
        logs = [r["line"] for r in client.logs(job["id"])]
        assert any(line.endswith(f"(step {checkpoint['step']})") and "resumed from" in line for line in logs), logs
        second = sorted(p["step"] for p in client.metrics(job["id"], ("loss",)) if p["agent_task_id"].endswith("-a2"))
        assert second[0] == checkpoint["step"] + 1  # not one step trained twice, none skipped
        checksums = [t["metrics"]["param_checksum"] for t in final["task_list"]]
        assert checksums[0] == checksums[1]
        assert final["metrics"]["epoch"] == 12.0
        warnings = [line for line in logs if "Warning" in line]
        assert not warnings, warnings
