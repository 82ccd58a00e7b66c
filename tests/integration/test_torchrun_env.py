"""Scripts get torchrun's environment, also when several ranks of a gang share an agent: they see their GPUs
together, each its own at cuda:LOCAL_RANK."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

FAKE_NVML = Path(__file__).resolve().parents[1] / "helpers" / "fake_nvml"

KEYS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip

# What a torchrun script does: env:// rendezvous, then report what it was given.
ENV_SCRIPT = f"""
import json, os
import torch
import torch.distributed as dist

dist.init_process_group("gloo", init_method="env://")
total = torch.tensor([1.0])
dist.all_reduce(total)
print("ENV " + json.dumps({{k: os.environ.get(k) for k in {KEYS!r}}} | {{"members": total.item()}}))
dist.destroy_process_group()
"""


def rank_envs(client: Client, job_id: str) -> list[dict[str, Any]]:
    lines = [r for r in client.logs(job_id) if r["line"].startswith("ENV ")]
    return [json.loads(r["line"][4:]) for r in sorted(lines, key=lambda r: r["task_index"])]


def test_gang_on_two_agents_gets_torchrun_numbers_and_a_gpu_per_rank(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> None:
    """3 ranks, one GPU each, on agents with 2 and 1 (fake) GPUs: two ranks must share the first agent."""
    path = os.pathsep.join(p for p in (str(FAKE_NVML), os.environ.get("PYTHONPATH", "")) if p)
    agents = [
        agent_factory(
            tmp_path / f"agent{gpus}",
            name=f"gpu{gpus}-agent",
            cpu_slots=gpus,
            env={"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN, "PYTHONPATH": path, "TENSORFLEET_FAKE_GPUS": str(gpus)},
        )
        for gpus in (2, 1)
    ]
    controller = controller_factory(tmp_path / "controller")
    for process in (*agents, controller):
        process.spawn()
    for agent in agents:
        agent.wait_ready()
    controller.wait_ready()
    script = tmp_path / "env.py"
    script.write_text(ENV_SCRIPT)
    names = {a.name for a in agents}
    with Client(controller.address) as client:
        wait_until(lambda: names <= {a["name"] for a in client.agents() if a["state"] == "ONLINE"}, 20, "agents")
        submit = ["submit", "--script", str(script), "--workers", "3", "--gpus", "1", "--max-retries", "1"]
        on = [f"--on={n}" for n in sorted(names)]
        job = cli_json(controller.cli(*submit, *on, "--wait", "--json", timeout=180))
        assert job["state"] == "SUCCEEDED", job
        envs = rank_envs(client, job["id"])
        placed = [t["agent"] for t in client.job(job["id"])["task_list"]]
    assert sorted(placed) == ["gpu1-agent", "gpu2-agent", "gpu2-agent"]
    shared = [rank for rank, name in enumerate(placed) if name == "gpu2-agent"]
    alone = placed.index("gpu1-agent")
    expected_group = {name: group for group, name in enumerate(dict.fromkeys(placed))}  # agents by lowest rank
    assert [e["RANK"] for e in envs] == ["0", "1", "2"]
    assert [envs[r]["LOCAL_RANK"] for r in shared] == ["0", "1"]  # was "0" for both
    assert envs[alone]["LOCAL_RANK"] == "0" and envs[alone]["LOCAL_WORLD_SIZE"] == "1"
    for rank, env in enumerate(envs):
        assert env["LOCAL_WORLD_SIZE"] == ("2" if rank in shared else "1")
        assert env["GROUP_RANK"] == str(expected_group[placed[rank]]) and env["GROUP_WORLD_SIZE"] == "2"
        assert env["WORLD_SIZE"] == env["ROLE_WORLD_SIZE"] == "3" and env["ROLE_RANK"] == env["RANK"]
        assert env["ROLE_NAME"] == "default" and env["TORCHELASTIC_RUN_ID"] == job["id"]
        assert env["TORCHELASTIC_RESTART_COUNT"] == "0" and env["TORCHELASTIC_MAX_RESTARTS"] == "1"
        assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == envs[0]["MASTER_PORT"]
        assert env["members"] == 3.0  # all three met at the env:// rendezvous
    # as torchrun and Ray Train: the ranks sharing an agent see its group's GPUs, their own at cuda:LOCAL_RANK
    assert [envs[r]["CUDA_VISIBLE_DEVICES"] for r in shared] == ["0,1", "0,1"]
    assert envs[alone]["CUDA_VISIBLE_DEVICES"] == "0"
