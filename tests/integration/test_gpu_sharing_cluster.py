"""A real controller and agent (the test-only fake GPU inventory: two 16 GiB GPUs): jobs submitted with
`--gpu-memory 6GiB` pack two per GPU, a whole-GPU job waits until the shares are gone, `tensorfleet agents`
shows the shares, and the two ranks of a gang sharing GPUs get one GPU each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

GIB = 1 << 30

# Says which GPU and share it got, then runs until the release file exists.
SCRIPT = """
import json, os, sys, time
from pathlib import Path
print("ENV " + json.dumps([os.environ["CUDA_VISIBLE_DEVICES"], os.environ.get("TENSORFLEET_GPU_MEMORY_FRACTION")]))
while not Path(sys.argv[1]).exists():
    time.sleep(0.05)
"""


def _env(client: Client, job_id: str) -> list[str | None]:
    lines = [r["line"] for r in client.logs(job_id) if r["line"].startswith("ENV ")]
    return json.loads(lines[0][4:]) if lines else []


def test_jobs_with_gpu_memory_pack_onto_the_fake_gpus(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> None:
    env = {"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN, "TENSORFLEET_TEST_FAKE_GPUS": "2x16GiB"}
    agent = agent_factory(tmp_path / "agent", name="fake-gpus", cpu_slots=2, env=env)
    controller = controller_factory(tmp_path / "controller")
    agent.spawn()
    controller.spawn()
    agent.wait_ready()
    controller.wait_ready()
    script, release = tmp_path / "share.py", tmp_path / "release"
    script.write_text(SCRIPT)
    submit = ["submit", "--script", str(script), "--script-arg", str(release), "--json"]
    with Client(controller.address) as client:
        wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 20, "the agent online")
        shared = [cli_json(controller.cli(*submit, "--gpu-memory", "6GiB"))["id"] for _ in range(4)]
        whole = cli_json(controller.cli(*submit, "--gpus", "1"))["id"]
        wait_until(lambda: all(_env(client, j) for j in shared), 30, "the four shares running")
        seen = sorted(_env(client, j)[0] or "" for j in shared)
        assert seen == ["0", "0", "1", "1"]  # two 6 GiB shares per 16 GiB GPU
        assert {_env(client, j)[1] for j in shared} == {"0.375000"}
        assert client.job(whole)["state"] == "QUEUED"  # no GPU is free whole
        wait_until(
            lambda: "(4 sharing)" in controller.cli("agents").stdout, 10, "agents showing the shares"
        )  # fmt: skip
        shown = controller.cli("agents", "show", "fake-gpus").stdout
        assert "GPU 0: 0 bytes of 16.0 GiB used, 12.0 GiB promised to 2 sharing tasks" in shown, shown
        release.touch()
        for job_id in shared:
            assert client.wait(job_id, timeout=30)["state"] == "SUCCEEDED"
        done = client.wait(whole, timeout=30)
        assert done["state"] == "SUCCEEDED" and _env(client, whole)[1] is None  # a whole GPU, no cap
        # a gang's sharing ranks get a GPU each, on the controller's plan and the agent's (NCCL: one rank per device)
        together = tmp_path / "release-gang"
        gang_args = ["submit", "--script", str(script), "--script-arg", str(together), "--json", "--workers", "2"]
        gang = cli_json(controller.cli(*gang_args, "--gpu-memory", "2GiB"))["id"]

        def ranks_env() -> list[str]:
            return [r["line"] for r in client.logs(gang) if r["line"].startswith("ENV ")]

        wait_until(lambda: len(ranks_env()) == 2, 30, "both ranks of the gang running")
        assert sorted(json.loads(line[4:])[0] for line in ranks_env()) == ["0", "1"], ranks_env()
        together.touch()
        assert client.wait(gang, timeout=30)["state"] == "SUCCEEDED"
