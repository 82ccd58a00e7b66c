"""A real controller whose data dir is a small tmpfs that fills up: it refuses new jobs, does not call a job
SUCCEEDED while its model cannot be saved, and carries on by itself once space is freed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.lan_cluster import fill_disk, small_tmpfs
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def test_a_full_controller_disk_refuses_submits_holds_the_model_and_recovers(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the controller's data dir needs root")
    with small_tmpfs(tmp_path / "controller", "80m") as data_dir:
        controller = controller_factory(data_dir).start()
        with Client(controller.address) as client:
            # queued until its agent comes, so that its model arrives once the disk is full
            spec = {"algorithm": "decision_tree", "dataset": "iris", "model_name": "held"}
            job = client.submit({**spec, "constraints": {"on": "late-agent"}})
            filler = fill_disk(data_dir)

            refused = controller.cli("submit", "--algorithm", "noop")
            assert refused.returncode == 4, refused.stderr  # not 2: the input was fine
            assert "controller data dir full (0 MiB free" in refused.stderr, refused.stderr
            assert [j["id"] for j in client.jobs()] == [job["id"]]  # nothing created for the refused one

            agent_factory(tmp_path / "agent", name="late-agent", cpu_slots=1).start()
            held = wait_until(
                lambda: (j := client.job(job["id"]))["error"] and j, 60, "the job to say its model is not saved"
            )
            assert held["state"] == "RUNNING" and "controller data dir full" in held["error"], held
            assert client.models(name="held")["models"] == []

            filler.unlink()
            done = wait_until(lambda: (j := client.job(job["id"]))["state"] != "RUNNING" and j, 60, "the job to end")
            assert done["state"] == "SUCCEEDED" and done["error"] == "", done
            assert done["model"]["name"] == "held"
            shown = cli_json(controller.cli("models", "show", "held", "--json"))
            assert shown["blob_status"] == "" and shown["version"] == done["model"]["version"]
            assert cli_json(controller.cli("submit", "--algorithm", "noop", "--json"))["id"]
        controller.stop()
