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

SAVES = """
from tensorfleet_agent import task

open("model.skops", "wb").write(b"the model")  # registered: the registry keeps it
task.save_artifact("model.skops", kind="model")
open("notes.txt", "w").write("kept with the job")  # kept while the job is
task.save_artifact("notes.txt")
"""


def test_rm_deletes_ended_jobs_refuses_a_running_one_and_gc_frees_their_files(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    blobs = controller.data_dir / "blobs"
    with Client(controller.address) as client:
        spec = {"algorithm": "script", "script": {"name": "save.py", "source": SAVES}, "model_name": "rm-kept"}
        job, quick = client.submit(spec), client.submit({"algorithm": "noop"})
        for one in (job, quick):
            done = client.wait(one["id"], timeout=60)
            assert done["state"] == "SUCCEEDED", done["error"]
        files = {a["name"]: blobs / a["sha256"][:2] / a["sha256"] for a in client.artifacts(job["id"])}
        running = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}})
        wait_until(lambda: client.job(running["id"])["state"] == "RUNNING", 30, "the sleep job running")

        cli_json(controller.cli("gc", "--grace", "0", "--json"))
        assert files["notes.txt"].exists(), "a kept job's file was collected"

        changes = client.watch_jobs()
        assert next(changes)["snapshot"]
        refused = controller.cli("rm", running["id"])
        assert refused.returncode == 2
        assert f"job {running['id']} is RUNNING; cancel it first" in refused.stderr, refused.stderr
        assert client.job(running["id"])["state"] == "RUNNING"

        deleted = cli_json(controller.cli("rm", job["id"], quick["id"][:8], "--json"))
        assert [(j["id"], j["state"]) for j in deleted] == [(job["id"], "SUCCEEDED"), (quick["id"], "SUCCEEDED")]
        gone = {job["id"], quick["id"]}
        removed: set[str] = set()
        for change in changes:  # a job list hears of it
            removed.update(change["removed_job_ids"])
            if removed >= gone:
                break
        changes.close()

        listed = {j["id"] for j in cli_json(controller.cli("jobs", "--json"))}
        assert running["id"] in listed and not listed & gone
        status = controller.cli("status", job["id"])
        assert status.returncode == 2 and f"no job {job['id']!r}" in status.stderr
        again = controller.cli("rm", job["id"], quick["id"])  # neither is there: each refusal is said
        assert again.returncode == 2 and again.stderr.count("no job") == 2
        with pytest.raises(NotFound):
            client.metrics(job["id"])
        version: dict[str, Any] = client.model("rm-kept")  # the registry is independent of the job
        assert version["job_id"] == job["id"] and version["sha256"] == files["model.skops"].name

        freed = cli_json(controller.cli("gc", "--grace", "0", "--json"))
        assert freed["deleted"] >= 1 and not files["notes.txt"].exists()
        assert files["model.skops"].exists()  # the model version's file stays

        client.cancel(running["id"])
        assert client.wait(running["id"], timeout=30)["state"] == "CANCELLED"
        assert controller.cli("rm", running["id"]).returncode == 0
