"""A bundled sweep under keep_models best on real agents (TaskSpec.trial_files, task.keeps_files): a bundled trial
writes its model and report only while it leads the trials its task ran before it (core/ranking.py's order), the
task's own run always; the sweep's best trial has its model, registered. keep_models all, where every trial writes
them, is test_sweep_keep_models.test_a_bundled_sweep_keeps_every_trial_its_own_result."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_agent.core.ranking import ranks_before
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def test_only_trials_that_led_their_bundle_wrote_a_model(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    spec: dict[str, Any] = {"algorithm": "decision_tree", "dataset": "iris", "model_name": "trial-files"}
    spec["sweep"] = {"params": {"max_depth": "int:1:6", "min_samples_split": "int:2:30"}, "search": "random"}
    spec["sweep"].update(trials=16, trials_per_task=8)
    with Client(controller.address) as client:
        job = client.wait(str(client.submit(spec)["id"]), timeout=180)
        assert job["state"] == "SUCCEEDED", job
        detail = client.job(job["id"])
        events = list(client.watch(job["id"]))
        [version] = client.models(name="trial-files", limit=10)["models"]
    tasks = {t["index"]: t for t in detail["task_list"]}
    assert len(tasks) == 16 and all(t["state"] == "SUCCEEDED" for t in tasks.values())
    score = {i: float(t["metrics"]["test_accuracy"]) for i, t in tasks.items()}
    models = {a["task_index"]: a["sha256"] for a in detail["artifacts"] if a["kind"] == "model"}
    reports = {a["task_index"] for a in detail["artifacts"] if a["kind"] == "report"}
    assert set(models) == reports  # a trial writes both or neither

    best = int(job["metrics"]["best_trial"])
    assert best in models and version["sha256"] == models[best]  # the global best wrote its model, registered

    lead_of: dict[int, int] = {}  # rider -> the trial whose task it rode in (its last placement)
    for event in events:
        message = str(event.get("message", ""))
        if event["kind"] == "task_state" and "in a bundle with trial" in message:
            lead_of[int(event["task_index"])] = int(message.rsplit(" ", 1)[1])
    assert len(lead_of) >= 8  # most trials rode in another's task
    bundles: dict[int, list[int]] = {}
    for index in tasks:
        bundles.setdefault(lead_of.get(index, index), []).append(index)
    for lead, members in bundles.items():
        riders = sorted((i for i in members if i != lead), key=lambda i: tasks[i]["started_at"])  # the order run
        for k, rider in enumerate(riders):
            led = all(ranks_before((score[rider], rider), (score[j], j), True) for j in riders[:k])
            assert (rider in models) == led, (lead, riders, {i: score[i] for i in members}, sorted(models))
        if lead in tasks:
            assert lead in models  # the task's own run always writes them
    assert len(models) < len(tasks)  # trials that could no longer be the best wrote nothing
