"""Preemption on real processes (issue 24): a controller and an agent of one slot; a checkpointing script job at
priority -1 (submitted with `tensorfleet submit --preemptible`) fills the slot, a priority-10 job arrives. The
scheduler asks the agent to preempt the first (CancelTask preempt=True: it saves a checkpoint and stops, ending
PREEMPTED with the reason naming the second job), the second runs, then the first resumes from its checkpoint (its
step continues) and succeeds without a retry spent."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

STEPS = """
import sys
import time
from tensorfleet_agent import task

resume = task.resume_checkpoint()
step = int(resume.read_text()) if resume is not None else 0
print(f"starting after step {step}", flush=True)
ckpt = task.checkpoint_dir() / "step.txt"
# The first run steps until it is asked to stop (the test's preemption), at most a minute; a resumed one goes 10 more.
last = step + 10 if resume is not None else 600


def save():
    ckpt.write_text(str(step))
    task.save_checkpoint(ckpt, step=step)


while step < last:
    if task.stop_requested():
        save()
        raise task.Stopped(f"stopped after step {step}")
    time.sleep(0.1)
    step += 1
    task.report(step, count=float(step))
    if step % 3 == 0:
        save()
if resume is None:
    sys.exit("never preempted")
print(f"done at step {step}", flush=True)
"""


def test_a_more_important_job_preempts_a_checkpointing_one_which_resumes_after(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    agent = agent_factory(tmp_path / "agent", name="solo", cpu_slots=1)
    controller = controller_factory(tmp_path / "controller")
    agent.spawn()
    controller.spawn()
    agent.wait_ready()
    controller.wait_ready()
    script = tmp_path / "steps.py"
    script.write_text(textwrap.dedent(STEPS))
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 1, 20, "the agent online")
        low = cli_json(
            controller.cli(
                "submit",
                "--script",
                str(script),
                "--name",
                "low",
                "--priority",
                "-1",
                "--preemptible",
                "--max-retries",
                "0",
                "--json",
            )
        )
        wait_until(lambda: client.job(low["id"])["task_list"][0]["state"] in ("RUNNING", "FAILED"), 30, "running")
        wait_until(lambda: _checkpointed(client, low["id"]), 30, "a checkpoint")
        high = client.submit({"name": "high", "algorithm": "sleep", "hyperparameters": {"seconds": 1}, "priority": 10})
        done = client.wait(high["id"], timeout=60)
        assert done["state"] == "SUCCEEDED", done
        final = client.wait(low["id"], timeout=60)
        assert final["state"] == "SUCCEEDED", final
        task = final["task_list"][0]
        assert (task["attempt"], task["failures"], task["replacements"]) == (2, 0, 0), task

        said = [e.get("message", "") for e in client.watch(low["id"])]
        why = f"preempted by job {high['id']} (high, priority 10"
        assert any(m.startswith(why) and m.endswith("saving a checkpoint, then stopping") for m in said), said
        assert any(m.startswith(why) and m.endswith(")") for m in said), said  # its end: exit cause preempted
        asked = [e.get("message", "") for e in client.watch(high["id"])]
        assert f"preempting 1 task(s) of job {low['id']} (low, priority -1) for it" in asked, asked

        lines = [entry.get("line", "") for entry in client.logs(low["id"])]
        starts = [int(m.group(1)) for line in lines if (m := re.search(r"starting after step (\d+)", line))]
        assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, lines  # resumed from its checkpoint
        assert any(f"done at step {starts[1] + 10}" in line for line in lines), lines


def _checkpointed(client: Client, job_id: str) -> bool:
    job = client.job(job_id)
    assert job["state"] in ("QUEUED", "RUNNING"), (job["error"], job["task_list"])
    return any(a["kind"] == "checkpoint" for a in job["artifacts"])


def test_a_preemptible_gang_gives_way_whole_and_resumes_whole(
    agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    agents = [agent_factory(tmp_path / f"agent{i}", name=f"gang-{i}", cpu_slots=1) for i in range(2)]
    controller = controller_factory(tmp_path / "controller")
    for process in (*agents, controller):
        process.spawn()
    for agent in agents:
        agent.wait_ready()
    controller.wait_ready()
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 20, "two agents online")
        source = textwrap.dedent(STEPS)
        gang = client.submit(
            {
                "name": "gang",
                "algorithm": "script",
                "script": {"name": "steps.py", "source": source, "args": []},
                "num_workers": 2,
                "priority": -3,
                "max_retries": 0,
            }
        )
        wait_until(lambda: _checkpointed(client, gang["id"]), 30, "a checkpoint")
        high = client.submit({"name": "high", "algorithm": "sleep", "hyperparameters": {"seconds": 1}, "priority": 1})
        assert client.wait(high["id"], timeout=60)["state"] == "SUCCEEDED"
        final = client.wait(gang["id"], timeout=60)
        assert final["state"] == "SUCCEEDED", final
        assert [(t["attempt"], t["failures"], t["replacements"]) for t in final["task_list"]] == [(2, 0, 0)] * 2
        asked = [e.get("message", "") for e in client.watch(high["id"])]
        assert f"preempting 2 task(s) of job {gang['id']} (gang, priority -3) for it" in asked, asked
        lines = client.logs(gang["id"])
        for rank in (0, 1):
            starts = [
                int(m.group(1))
                for row in lines
                if row["task_index"] == rank and (m := re.search(r"starting after step (\d+)", row["line"]))
            ]
            assert len(starts) == 2 and starts[0] == 0 and starts[1] > 0, (rank, lines)
