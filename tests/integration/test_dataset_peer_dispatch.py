"""Peer-to-peer dataset transfer through a real controller and agents (issue 20): a version one agent mounted is
what a second agent gets from it (the controller sends the manifest only), each task's dataset_transfer says so in
`status --json` and over HTTP, and `agents cache` / GET /agents/{id}/cache list the version on the first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json, online
from helpers.http_api import HttpApi
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.project import hash_cache

pytestmark = pytest.mark.slow

READER = "from tensorfleet_agent import task\nimport os\nprint('files', len(os.listdir(task.dataset_dir())))\n"


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)


def _transfer(controller: ControllerProcess, script: Path, agent: str) -> dict[str, Any]:
    job = cli_json(
        controller.cli("submit", "--script", str(script), "--dataset", "pets", "--on", agent, "--wait", "--json")
    )
    assert job["state"] == "SUCCEEDED", job
    (task,) = cli_json(controller.cli("status", job["id"], "--json"))["task_list"]
    assert task["agent"] == agent and task["dataset_transfer"], task
    return {"job": job["id"], **task["dataset_transfer"]}


def test_a_second_agent_gets_the_version_from_the_first(
    http_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    controller, _ = http_cluster
    pets = tmp_path / "pets"
    pets.mkdir()
    for i in range(4):
        (pets / f"{i}.bin").write_bytes(os.urandom(100_000))
    script = tmp_path / "read.py"
    script.write_text(READER)
    with Client(controller.address) as client:
        version = client.upload_dataset_version(pets, "pets")
        first, second = sorted(online(client))
    one = _transfer(controller, script, first)
    assert one["bytes_from_peers"] == 0 and one["bytes_from_controller"] >= 400_000, one
    two = _transfer(controller, script, second)
    assert two["bytes_from_peers"] == 400_000 and two["peers_used"] == 1, two
    assert two["bytes_from_controller"] < 100_000 and two["peer_failures"] == 0, two  # the manifest only
    cache = cli_json(controller.cli("agents", "cache", first, "--json"))
    assert version["content_id"] in [t["content_id"] for t in cache["trees"]] and cache["blob_bytes"] >= 400_000
    api = HttpApi.of(controller)
    trees = api.ok("GET", f"agents/{first}/cache")["trees"]
    assert [t["version"] for t in trees if t["content_id"] == version["content_id"]] == [1]
    (task,) = api.ok("GET", f"jobs/{two['job']}/tasks")["items"]
    assert task["dataset_transfer"]["bytes_from_peers"] == 400_000
    table = controller.cli("status", two["job"]).stdout
    assert "dataset: 390.6 KiB from 1 peer(s)" in table, table
