"""A graceful controller stop with jobs running (`tensorfleet shutdown`, SIGTERM), then a restart on the same
data dir: every job carries on with its first attempt, and its stored history is whole against the agents'
journals, nothing lost, nothing stored twice.

What a graceful stop does to running tasks: the controller stops watching (after saving what it received) and
leaves agents started on their own running; its local agent is stopped too, and drains (its running tasks
finish, journaled) before the controller exits. On restart the controller re-attaches to each attempt on its
agent and replays the journal from its saved cursor. (SIGKILL + restart: test_controller.py.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.history import check_history
from helpers.waiting import wait_until
from tensorfleet_agent.core.types import Finished, LogLine, MetricPoint, Progress, TaskEvent
from tensorfleet_agent.runtime.journal import EVENTS_FILE, read_events
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def _journal(agent_dir: Path, attempt: str) -> list[TaskEvent]:
    return read_events(agent_dir / "tasks" / attempt / EVENTS_FILE)


def _finished(agent_dir: Path, attempt: str) -> str:
    """The journaled outcome of an attempt ("" while it runs)."""
    return next((e.payload.status.value for e in _journal(agent_dir, attempt) if isinstance(e.payload, Finished)), "")


def _check_whole(client: Client, job_id: str, agent_dir: Path) -> None:
    """check_history (sequence, metrics vs journal, one SUCCEEDED per task), and the same for the other kinds an
    agent sends: each log line and progress report its agent journaled is stored once, in order."""
    events = check_history(client, job_id, [agent_dir])
    job = client.job(job_id)
    assert job["state"] == "SUCCEEDED", job
    assert job["tasks"]["attempts"] == len(job["task_list"]), "a task was run again instead of carrying on"
    for task in job["task_list"]:
        journal = _journal(agent_dir, task["agent_task_id"])
        logs = [row for e in events if e["kind"] == "logs" for row in e["lines"] if row["task_index"] == task["index"]]
        stored_logs = [row["line"] for row in logs if row["stream"] != "controller"]
        assert stored_logs == [e.payload.line for e in journal if isinstance(e.payload, LogLine)], (
            "log lines lost/repeated"
        )
        mine = [e for e in events if e["kind"] == "progress" and e["task_index"] == task["index"]]
        stored_progress = [e["fraction"] for e in mine]
        journaled = [e.payload.fraction for e in journal if isinstance(e.payload, Progress)]
        assert stored_progress == journaled, "progress lost or repeated"


#: Reports a point every 0.1 s (a log line and a progress report now and then) until the file named by its
#: argument appears, then 5 more points: the test decides when each task may end.
SCRIPT = """
import sys
import time
from pathlib import Path
from tensorfleet_agent import task

go = Path(sys.argv[1])
print("waiting for", go.name, flush=True)
task.report(step=0, first=1.0)  # once: after a restart the job's summary must still have it
step = 0
while not go.exists():
    task.report(step=step, value=float(step))
    if step % 10 == 0:
        task.progress(min(0.9, step / 100))
    step += 1
    time.sleep(0.1)
for _ in range(5):
    task.report(step=step, value=float(step))
    step += 1
print("released after", step, "points", flush=True)
"""


@pytest.mark.parametrize("how", ["shutdown", "sigterm"])
def test_graceful_stop_with_jobs_running_then_restart(
    how: str,
    tmp_path: Path,
    agent_factory: type[AgentProcess],
    controller_factory: type[ControllerProcess],
) -> None:
    remote = agent_factory(tmp_path / "remote", name="remote", cpu_slots=1)
    controller = controller_factory(tmp_path / "controller", local_agent=True, extra_args=["--local-agent-slots", "1"])
    remote.spawn()
    controller.spawn()
    remote.wait_ready()
    controller.wait_ready()
    local_dir = controller.data_dir / "local-agent"
    go = {"local": tmp_path / "go-local", "remote": tmp_path / "go-remote"}
    where = {"local": controller.info["local_agent_id"], "remote": "remote"}
    dirs = {"local": local_dir, "remote": remote.data_dir}
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 20, "local + remote agent")
        ids = {
            side: client.submit(
                {
                    "script": {"name": "gated.py", "source": SCRIPT, "args": [str(go[side])], "requirements": []},
                    "constraints": {"on": [where[side]]},
                }
            )["id"]
            for side in ("local", "remote")
        }
        jobs = wait_until(
            lambda: (
                (js := [client.job(i) for i in ids.values()])
                and all(j["task_list"][0]["state"] == "RUNNING" and j["metrics"].get("value", 0) >= 2 for j in js)
                and js
            ),
            60,
            "both jobs running, with some points stored",
        )
        attempts = {side: job["task_list"][0]["agent_task_id"] for side, job in zip(ids, jobs, strict=True)}
        if how == "shutdown":
            assert controller.cli("shutdown").returncode == 0
        else:
            assert controller.proc is not None
            controller.proc.send_signal(signal.SIGTERM)
    # the controller stops watching, then its local agent drains: its task may still finish (and does, once let go)
    drained = controller.data_dir / "local-agent.log"
    wait_until(lambda: "stop requested: draining" in drained.read_text(), 30, "the local agent drains")
    go["local"].touch()
    assert controller.proc is not None and controller.proc.wait(60) == 0
    assert _finished(local_dir, attempts["local"]) == "SUCCEEDED"
    assert _finished(remote.data_dir, attempts["remote"]) == "", "a remote agent's task stops with the controller"
    assert remote.proc is not None and remote.proc.poll() is None

    journaled = sum(isinstance(e.payload, MetricPoint) for e in _journal(remote.data_dir, attempts["remote"]))
    controller.start()
    with Client(controller.address) as client:  # re-attached: what the task reported meanwhile, then live

        def remote_value() -> float:
            return float(client.job(ids["remote"])["metrics"].get("value", -1))

        wait_until(lambda: remote_value() > journaled, 30, "the remote task followed")
        go["remote"].touch()
        for side, job_id in ids.items():
            assert client.wait(job_id, timeout=60)["state"] == "SUCCEEDED", side
            _check_whole(client, job_id, dirs[side])
            final = client.job(job_id)
            assert final["task_list"][0]["agent_task_id"] == attempts[side]
            assert final["metrics"]["first"] == 1.0 and final["task_list"][0]["metrics"]["first"] == 1.0, final
            steps = [p["step"] for p in client.metrics(job_id) if p["name"] == "value"]
            assert steps == list(range(len(steps))) and len(steps) > 5, f"{side}: a gap or a duplicate in {steps}"
            assert final["metrics"]["value"] == steps[-1]
