"""A graceful controller stop with jobs running (`tensorfleet shutdown`, SIGTERM), then a restart on the same
data dir: every job carries on with its first attempt, and its stored history is whole against the agents'
journals, nothing lost, nothing stored twice.

What a graceful stop does to running tasks: the controller stops watching (after saving what it received) and
leaves agents started on their own running; its local agent is stopped too, and drains (its running tasks
finish, journaled) before the controller exits. On restart the controller re-attaches to each attempt on its
agent and replays the journal from its saved cursor. (SIGKILL + restart: test_controller.py.)
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.history import check_history
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def _journal(agent_dir: Path, attempt: str) -> list[dict[str, Any]]:
    path = agent_dir / "tasks" / attempt / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _finished(agent_dir: Path, attempt: str) -> str:
    """The journaled outcome of an attempt ("" while it runs)."""
    return next((e["status"] for e in _journal(agent_dir, attempt) if e["kind"] == "finished"), "")


def _check_whole(client: Client, job_id: str, agent_dir: Path) -> None:
    """check_history (sequence, metrics vs journal, one SUCCEEDED per task), and the same for the other kinds an
    agent sends: each log line and progress report its agent journaled is stored once, in order."""
    events = check_history(client, job_id, [agent_dir])
    job = client.job(job_id)
    assert job["state"] == "SUCCEEDED", job
    assert job["tasks"]["attempts"] == len(job["task_list"]), "a task was run again instead of carrying on"
    for task in job["task_list"]:
        journal = _journal(agent_dir, task["agent_task_id"])
        mine = [e for e in events if e["task_index"] == task["index"]]
        stored_logs = [e["message"] for e in mine if e["kind"] == "log" and e["stream"] != "controller"]
        assert stored_logs == [e["line"] for e in journal if e["kind"] == "log"], "log lines lost or repeated"
        stored_progress = [e["value"] for e in mine if e["kind"] == "progress"]
        assert stored_progress == [e["fraction"] for e in journal if e["kind"] == "progress"], "progress lost/repeated"


@pytest.mark.parametrize("how", ["shutdown", "sigterm"])
def test_graceful_stop_with_jobs_running_then_restart(
    how: str,
    tmp_path: Path,
    agent_factory: type[AgentProcess],
    controller_factory: type[ControllerProcess],
) -> None:
    remote = agent_factory(tmp_path / "remote", name="remote", cpu_slots=2)
    controller = controller_factory(tmp_path / "controller", local_agent=True, extra_args=["--local-agent-slots", "2"])
    remote.spawn()
    controller.spawn()
    remote.wait_ready()
    controller.wait_ready()
    local_dir = controller.data_dir / "local-agent"
    on_local = {"on": [controller.info["local_agent_id"]]}
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 20, "local + remote agent")
        jobs = {  # the remote ones outlast the stop; the local ones finish while the local agent drains
            "remote emit": client.submit(
                {"algorithm": "emit", "hyperparameters": {"points": 120, "rate": 20}, "constraints": {"on": ["remote"]}}
            ),
            "remote sleep": client.submit(
                {"algorithm": "sleep", "hyperparameters": {"seconds": 4}, "constraints": {"on": ["remote"]}}
            ),
            "local emit": client.submit(
                {"algorithm": "emit", "hyperparameters": {"points": 30, "rate": 15}, "constraints": on_local}
            ),
            "local sleep": client.submit(
                {"algorithm": "sleep", "hyperparameters": {"seconds": 2}, "constraints": on_local}
            ),
        }
        ids = {name: job["id"] for name, job in jobs.items()}
        wait_until(
            lambda: (
                all(client.job(i)["task_list"][0]["state"] == "RUNNING" for i in ids.values())
                and client.job(ids["remote emit"])["metrics"].get("value", 0) >= 4
                and client.job(ids["local emit"])["metrics"].get("value", 0) >= 2
            ),
            30,
            "all four jobs running, with some points stored",
        )
        attempts = {name: client.job(i)["task_list"][0]["agent_task_id"] for name, i in ids.items()}
        if how == "shutdown":
            assert controller.cli("shutdown").returncode == 0
        else:
            assert controller.proc is not None
            controller.proc.send_signal(signal.SIGTERM)
    assert controller.proc is not None and controller.proc.wait(60) == 0
    # stopped: its local agent drained (its tasks finished), the remote agent's tasks run on unwatched
    assert _finished(local_dir, attempts["local emit"]) == "SUCCEEDED"
    assert _finished(local_dir, attempts["local sleep"]) == "SUCCEEDED"
    assert _finished(remote.data_dir, attempts["remote emit"]) == "", "finished before the controller stopped"
    assert remote.proc is not None and remote.proc.poll() is None

    controller.start()
    with Client(controller.address) as client:
        for name, job_id in ids.items():
            assert client.wait(job_id, timeout=60)["state"] == "SUCCEEDED", name
            _check_whole(client, job_id, local_dir if name.startswith("local") else remote.data_dir)
            assert client.job(job_id)["task_list"][0]["agent_task_id"] == attempts[name]
        for name, points in (("remote emit", 120), ("local emit", 30)):
            steps = [p["step"] for p in client.metrics(ids[name]) if p["name"] == "value"]
            assert steps == list(range(points)), f"{name}: the stored series has a gap or a duplicate"
