"""A sweep's history holds a few "progress" job_state records, not one per trial (EventLog.progress), and a watcher
still follows the job to its end: the last job_state it sees is the end, with the whole sweep done."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

TRIALS = 120


def test_a_watcher_sees_the_sweep_to_its_end_with_few_progress_records(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        spec: dict[str, Any] = {"algorithm": "decision_tree", "dataset": "iris"}
        spec["sweep"] = {"params": {"max_depth": "int:1:10"}, "search": "random", "trials": TRIALS}
        job_id = str(client.submit(spec)["id"])
        live: list[dict[str, Any]] = []
        watcher = threading.Thread(target=lambda: live.extend(client.watch(job_id)))
        watcher.start()
        job = client.wait(job_id, timeout=180)
        watcher.join(60)
        assert job["state"] == "SUCCEEDED" and job["progress"] == 1.0, job
        summaries = [e for e in live if e["kind"] == "job_state"]
        assert summaries[-1]["state"] == "SUCCEEDED" and summaries[-1]["job"]["progress"] == 1.0
        assert summaries[-1]["job"]["tasks"]["completed"] == TRIALS
        ended = [e for e in live if e["kind"] == "task_state" and e["state"] == "SUCCEEDED"]
        assert sorted(e["task_index"] for e in ended) == list(range(TRIALS))  # every trial's end, as before
        progress = [e for e in client.watch(job_id) if e["kind"] == "job_state" and e["message"] == "progress"]
        assert 1 <= len(progress) < TRIALS / 4, len(progress)  # one per trial before
