"""A sweep moves only what matters: keep_models best registers the best trial's model alone and copies no losing
trial's files to the controller; all registers every succeeded trial (the best last); none registers nothing."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

TRIALS = 5


def submit(client: Client, name: str, keep: str | None) -> str:
    spec: dict[str, Any] = {"algorithm": "decision_tree", "dataset": "iris", "model_name": name}
    spec["sweep"] = {"params": {"max_depth": "int:3:8"}, "search": "random", "trials": TRIALS}
    if keep is not None:
        spec["keep_models"] = keep
    return str(client.submit(spec)["id"])


def finished(client: Client, job_id: str) -> dict[str, Any]:
    job = client.wait(job_id, timeout=180)
    assert job["state"] == "SUCCEEDED", job
    return dict(job)


def versions(client: Client, name: str) -> list[dict[str, Any]]:
    return list(client.models(name=name, limit=100)["models"])


def in_blob_store(controller: ControllerProcess, sha256: str) -> bool:
    return (controller.data_dir / "blobs" / sha256[:2] / sha256).exists()


def test_keep_models_best_all_none(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        ids = [submit(client, f"keep-{keep}", None if keep == "best" else keep) for keep in ("best", "all", "none")]
        best = finished(client, ids[0])  # keep_models left out: best
        detail = client.job(best["id"])
        [version] = versions(client, "keep-best")
        best_index = int(best["metrics"]["best_trial"])
        assert version["metrics"]["test_accuracy"] == best["metrics"]["test_accuracy"]
        assert version["hyperparameters"]["max_depth"] == detail["task_list"][best_index]["params"]["max_depth"]
        models = {a["task_index"]: a["sha256"] for a in detail["artifacts"] if a["kind"] == "model"}
        assert version["sha256"] == models[best_index]
        tasks = {t["index"]: t for t in detail["task_list"]}
        score = {i: t["metrics"]["test_accuracy"] for i, t in tasks.items()}

        def beaten(i: int) -> bool:  # by a trial (a better score, or the same and a lower index) over before it began
            ahead = [j for j in tasks if score[j] > score[i] or (score[j] == score[i] and j < i)]
            return any(tasks[j]["finished_at"] < tasks[i]["started_at"] for j in ahead)

        # a trial wrote no model only if it ranked behind the sweep's best when it was sent (task.keeps_files)
        assert all(beaten(i) for i in tasks if i not in models), (models, tasks)

        lost = [i for i in tasks if beaten(i)]
        assert lost, tasks  # trials never the best so far: their model and report stayed on their agents
        files = {a["sha256"] for a in detail["artifacts"] if a["task_index"] in lost}
        assert in_blob_store(controller, version["sha256"])
        assert not any(in_blob_store(controller, sha) for sha in files - {version["sha256"]})

        everything = finished(client, ids[1])
        listed = versions(client, "keep-all")
        assert len(listed) == TRIALS  # every trial succeeded: each registered
        latest = max(listed, key=lambda v: v["version"])
        assert latest["metrics"]["test_accuracy"] == everything["metrics"]["test_accuracy"]
        assert latest["version"] == everything["model"]["version"]
        trials = {int(v["metrics"]["trial"]) for v in listed if "trial" in v["metrics"]}
        assert trials == set(range(TRIALS)) - {int(everything["metrics"]["best_trial"])}
        assert all(in_blob_store(controller, v["sha256"]) for v in listed)

        nothing = finished(client, ids[2])
        assert versions(client, "keep-none") == [] and not nothing.get("model")


def test_a_bundled_sweep_keeps_every_trial_its_own_result(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    """12 trials, 4 per agent task on 2 real agents: every trial is its own result (its params' own score, as a fit
    here gives it, its own model registered), through fewer agent tasks than trials."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    controller, _ = shared_cluster
    spec: dict[str, Any] = {"algorithm": "decision_tree", "dataset": "iris", "model_name": "bundled"}
    spec["sweep"] = {"params": {"max_depth": "int:1:6", "min_samples_split": "int:2:30"}, "search": "random"}
    spec["sweep"].update(trials=12, trials_per_task=4)
    spec["keep_models"] = "all"
    with Client(controller.address) as client:
        job = finished(client, str(client.submit(spec)["id"]))
        detail = client.job(job["id"])
        events = list(client.watch(job["id"]))
        listed = versions(client, "bundled")
    tasks = detail["task_list"]
    assert len(tasks) == 12 and all(t["state"] == "SUCCEEDED" for t in tasks)
    x, y = load_iris(return_X_y=True)
    a, b, c, d = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    for task in tasks:
        params = {k: v for k, v in task["params"].items() if k in DecisionTreeClassifier().get_params()}
        assert task["metrics"]["test_accuracy"] == DecisionTreeClassifier(**params).fit(a, c).score(b, d), task
    rode = [e for e in events if e["kind"] == "task_state" and "in a bundle with trial" in e.get("message", "")]
    leads = {e["message"].rsplit(" ", 1)[1] for e in rode}
    assert len(rode) >= 6 and len(leads) <= 6  # most trials rode with another: fewer tasks than trials
    models = {a["task_index"] for a in detail["artifacts"] if a["kind"] == "model"}
    assert models == set(range(12)) and len(listed) == 12  # each trial's own model, each registered
