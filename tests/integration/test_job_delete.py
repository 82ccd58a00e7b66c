"""`tensorfleet rm`: an ended job goes with its history, job lists hear it is gone, its registered model stays, its
files wait for `gc`; a job that has not ended is refused with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client, NotFound

pytestmark = pytest.mark.slow


def test_rm_deletes_ended_jobs_refuses_a_running_one_and_gc_frees_their_files(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    blobs = controller.data_dir / "blobs"
    with Client(controller.address) as client:
        saved = client.submit({"algorithm": "artifact", "hyperparameters": {"bytes": 4096}})  # a file gc keeps
        model = client.submit({"algorithm": "logistic_regression", "dataset": "iris", "model_name": "rm-kept"})
        ended = [client.wait(j["id"], timeout=60) for j in (saved, model)]
        assert [j["state"] for j in ended] == ["SUCCEEDED", "SUCCEEDED"]
        files = [blobs / a["sha256"][:2] / a["sha256"] for a in client.artifacts(saved["id"])]
        assert files
        running = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}})
        wait_until(lambda: client.job(running["id"])["state"] == "RUNNING", 30, "the sleep job running")

        cli_json(controller.cli("gc", "--grace", "0", "--json"))
        assert all(f.exists() for f in files), "a kept job's files were collected"

        changes = client.watch_jobs()
        assert next(changes)["snapshot"]
        refused = controller.cli("rm", running["id"])
        assert refused.returncode == 2
        assert f"job {running['id']} is RUNNING; cancel it first" in refused.stderr, refused.stderr
        assert client.job(running["id"])["state"] == "RUNNING"

        deleted = cli_json(controller.cli("rm", saved["id"], model["id"][:8], "--json"))
        assert [(j["id"], j["state"]) for j in deleted] == [(saved["id"], "SUCCEEDED"), (model["id"], "SUCCEEDED")]
        removed: set[str] = set()
        for change in changes:  # a job list hears of it
            removed.update(change["removed_job_ids"])
            if removed >= {saved["id"], model["id"]}:
                break
        changes.close()

        listed = {j["id"] for j in cli_json(controller.cli("jobs", "--json"))}
        assert running["id"] in listed and not listed & {saved["id"], model["id"]}
        status = controller.cli("status", saved["id"])
        assert status.returncode == 2 and f"no job {saved['id']!r}" in status.stderr
        again = controller.cli("rm", saved["id"], model["id"])  # neither is there: each refusal is said
        assert again.returncode == 2 and again.stderr.count("no job") == 2
        with pytest.raises(NotFound):
            client.metrics(saved["id"])
        version: dict[str, Any] = client.model("rm-kept")  # the registry is independent of the job
        assert version["job_id"] == model["id"]

        freed = cli_json(controller.cli("gc", "--grace", "0", "--json"))
        assert freed["deleted"] >= len(files) and not any(f.exists() for f in files)
        assert (blobs / version["sha256"][:2] / version["sha256"]).exists()  # the model version's file stays

        client.cancel(running["id"])
        assert client.wait(running["id"], timeout=30)["state"] == "CANCELLED"
        assert controller.cli("rm", running["id"]).returncode == 0
