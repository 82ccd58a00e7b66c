"""A project job's lifecycle on a real cluster (issue 19): pause, resume, retry and re-placement after the loss of
its agent work for a user's own program as they do for the built-in workloads.

The program (below) uses only the dependency-free task SDK: it checkpoints after every epoch, saves a checkpoint
and raises task.Stopped when a stop is requested, and continues from task.resume_checkpoint() when it starts. Its
checkpoint carries the history of the epochs it has done and which attempt did each, so the last run's output
shows whether any epoch was done twice or skipped. Everything is asserted from the job's events, metrics and
timestamps; nothing waits for a fixed time.

One controller and two agents serve the module (their envs built by uv from a local wheelhouse, offline). The
agent-loss tests kill one agent's whole process tree, as if its machine had gone, and start it again: they come
last."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import project_fixtures as pf
from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.project_tree import write_tree
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

COMMAND = ["python", "-m", "epochs.train"]
PAUSE_DEADLINE_S = 2.0 + 8.0  # the task stops at its next check (every 20 ms) plus a loaded 2-core machine's margin
LOST_DEADLINE_S = 3.0 + 2.0  # an agent is LOST within 3 s of dying (test_controller), plus margin
REPLACED_DEADLINE_S = LOST_DEADLINE_S + 15.0  # then the files pushed and the env found (built at worst) elsewhere

TRAIN_PY = '''\
"""Count epochs: a checkpoint after each, a checkpoint and Stopped when asked to stop, resume from a checkpoint."""

import argparse
import json
import os
import sys
import time

import tensorfleet_task as task


def main():
    parser = argparse.ArgumentParser(prog="epochs.train")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-seconds", type=float, default=0.3)
    parser.add_argument("--fail-at", type=int, default=-1, help="the job's first attempt exits 3 at this epoch")
    args = parser.parse_args()
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) + 1  # as under torchrun: 0 the first time
    resume = task.resume_checkpoint()
    state = json.loads(resume.read_text()) if resume is not None else {"epoch": -1, "history": []}
    print(f"attempt {attempt} rank {task.rank()} pid {os.getpid()} "
          f"resume {os.environ.get('TENSORFLEET_RESUME_CHECKPOINT', '-')} after epoch {state['epoch']}", flush=True)
    ckpt = task.checkpoint_dir() / "state.json"

    def checkpoint():
        if task.rank() == 0:  # as DDP trainers do: rank 0 saves, every rank resumes from it
            ckpt.write_text(json.dumps(state))
            task.save_checkpoint(ckpt, state["epoch"])

    for epoch in range(state["epoch"] + 1, args.epochs):
        if epoch == args.fail_at and attempt == 1:
            print(f"failing on purpose at epoch {epoch}", file=sys.stderr, flush=True)
            return 3
        deadline = time.monotonic() + args.epoch_seconds
        while time.monotonic() < deadline:
            if task.stop_requested():
                if state["epoch"] >= 0:
                    checkpoint()
                raise task.Stopped(f"paused after epoch {state['epoch']}")
            time.sleep(0.02)
        state["epoch"] = epoch
        state["history"].append([epoch, attempt])
        task.report(epoch, epoch=epoch, attempt=attempt)
        checkpoint()
    out = task.output_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"history{task.rank()}.json").write_text(json.dumps(state))
    print(f"done after epoch {state['epoch']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def _project(root: Path, name: str, requirements: str = f"{pf.UTIL_NAME}=={pf.UTIL_VERSION}\n") -> Path:
    """The epochs project, one folder per test (`name` in a file too: no other test's snapshot is the same)."""
    return write_tree(
        root / name,
        {
            "epochs/__init__.py": f'"""Epochs for {name}."""\n',
            "epochs/train.py": TRAIN_PY,
            "requirements.txt": requirements,
        },
    )


class Cluster:
    def __init__(self, controller: ControllerProcess, agents: list[AgentProcess], root: Path, house: Path) -> None:
        self.controller, self.agents, self.root, self.house = controller, agents, root, house
        self.client = Client(controller.address)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("lifecycle")
    house = pf.demo_wheelhouse(root / "wheels")
    token = {"TENSORFLEET_CLUSTER_TOKEN": f"lifecycle-{secrets.token_hex(8)}"}  # no other module's agents
    agents = [
        AgentProcess(root / f"agent{i}", name=f"agent-{i}", cpu_slots=2,
                     env={**token, **pf.agent_uv_env(house, root / f"uv-cache{i}")})
        for i in range(2)
    ]  # fmt: skip
    controller = ControllerProcess(root / "controller", extra_args=["--metrics-port", "0"], env=token)
    try:
        for agent in agents:
            agent.spawn()
        controller.spawn()
        for agent in agents:
            agent.wait_ready()
        controller.wait_ready()
        cluster = Cluster(controller, agents, root, house)
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in cluster.client.agents()) == 2, 20, "2 agents")
        yield cluster
        cluster.client.close()
    finally:
        for agent in agents:
            agent.signal_stop()
        controller.stop()
        for agent in agents:
            agent.stop()


# ---------------------------------------------------------------- helpers


def _logs(client: Client, job_id: str) -> list[str]:
    return [row["line"] for row in client.logs(job_id)]


def _history(client: Client, job_id: str) -> list[dict[str, Any]]:
    """Every event of an ended job, in order."""
    return list(client.watch(job_id))


def _first_event(client: Client, job_id: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The job's first event that is `wanted`, from its history (the job may still be going)."""
    events = client.watch(job_id)
    try:
        return next(e for e in events if wanted(e))
    finally:
        events.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _steps_by_attempt(client: Client, job_id: str, task_index: int = 0) -> dict[int, list[int]]:
    """The epochs each attempt of a task reported, in order (attempt number from its agent task id)."""
    steps: dict[int, list[int]] = {}
    points = {(p["agent_task_id"], p["step"]): p["value"] for p in client.metrics(job_id, ("attempt",))}
    for point in client.metrics(job_id, ("epoch",)):
        if point["task_index"] == task_index:
            attempt = int(point["agent_task_id"].rsplit("-a", 1)[1])
            # the program's own count (TORCHELASTIC_RESTART_COUNT + 1) is the controller's attempt
            assert points[(point["agent_task_id"], point["step"])] == attempt, (point, points)
            steps.setdefault(attempt, []).append(point["step"])
    return {attempt: sorted(values) for attempt, values in steps.items()}


def _starts(lines: list[str], rank: int = 0) -> dict[int, str]:
    """attempt -> the resume checkpoint the program was given ('-' for none), from its first line."""
    found = {}
    for line in lines:
        match = re.match(rf"attempt (\d+) rank {rank} pid \d+ resume (\S+) after epoch -?\d+$", line)
        if match:
            found[int(match.group(1))] = match.group(2)
    return found


def _output_history(client: Client, job_id: str, dest: Path, rank: int = 0) -> list[list[int]]:
    got = client.download_artifact(job_id, f"history{rank}.json", dest, task=rank)
    return json.loads(Path(got["path"]).read_text())["history"]


def _kill_machine(agent: AgentProcess) -> float:
    """kill -9 the agent and every process group under it (its workers and the programs they run), as if its
    machine had gone; when it was killed."""
    assert agent.proc is not None
    tree = psutil.Process(agent.proc.pid).children(recursive=True)
    killed_at = time.time()
    agent.kill()
    for process in tree:  # each worker leads a process group of its own (never this test's group)
        with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
            if (group := os.getpgid(process.pid)) != os.getpgrp():
                os.killpg(group, signal.SIGKILL)
    return killed_at


def _restart(cluster: Cluster, agent: AgentProcess) -> None:
    """The agent back with the same identity (and data dir), ONLINE again."""
    agent.start()
    wait_until(lambda: sum(a["state"] == "ONLINE" for a in cluster.client.agents()) == 2, 20, f"{agent.name} back")


def _wait_checkpoint(client: Client, job_id: str, step: int, timeout: float = 60) -> dict[str, Any]:
    """The job once a checkpoint of at least `step` is on it."""
    return wait_until(
        lambda: (
            (job := client.job(job_id))
            and any(a["kind"] == "checkpoint" and a["step"] >= step for a in job["artifacts"])
            and job
        ),
        timeout,
        f"a checkpoint of step {step}",
    )


# ---------------------------------------------------------------- pause and resume


def test_a_paused_project_stops_at_a_checkpoint_and_resumes_from_it(cluster: Cluster, tmp_path: Path) -> None:
    client = cluster.client
    project = _project(cluster.root, "pause")
    job = client.submit_project(project, [*COMMAND, "--epochs", "8"], max_retries=0)
    _wait_checkpoint(client, job["id"], 1)

    asked = time.time()
    assert client.pause(job["id"])["state"] == "PAUSED"
    paused = wait_until(
        lambda: (j := client.job(job["id"]))["task_list"][0]["state"] == "PENDING" and j, 30, "the task stopped"
    )
    (task,) = paused["task_list"]
    assert task["exit_cause"] == "stopped" and "paused after epoch" in task["error"], task
    assert task["attempt"] == 1 and task["failures"] == 0, task
    assert paused["state"] == "PAUSED"
    stopped_at = int(task["error"].rsplit("paused after epoch ", 1)[1].split()[0].rstrip(")"))
    latest = max((a for a in paused["artifacts"] if a["kind"] == "checkpoint"), key=lambda a: a["step"])
    assert latest["step"] == stopped_at, (latest, task["error"])  # the stop saved where it was
    cluster.controller.after_scheduler_passes()  # while paused nothing is placed again
    still = client.job(job["id"])
    assert still["state"] == "PAUSED" and still["task_list"][0]["attempt"] == 1, still["task_list"]

    client.resume(job["id"])
    done = client.wait(job["id"], 90)
    assert done["state"] == "SUCCEEDED", (done["error"], _logs(client, job["id"])[-20:])
    events = _history(client, job["id"])
    states = [(e["state"], e["time"]) for e in events if e["kind"] == "job_state"]
    paused_time = next(t for s, t in states if s == "PAUSED")
    stopped_time = next(
        e["time"] for e in events
        if e["kind"] == "task_state" and e["state"] == "PENDING" and e["time"] >= paused_time
    )  # fmt: skip
    assert stopped_time - asked < PAUSE_DEADLINE_S, stopped_time - asked
    print(f"pause -> stopped at a checkpoint in {stopped_time - asked:.2f}s")

    steps = _steps_by_attempt(client, job["id"])
    assert sorted(steps) == [1, 2], steps
    assert steps[1][-1] == stopped_at and steps[2][0] == stopped_at + 1, steps  # nothing redone, nothing skipped
    assert steps[2][-1] == 7
    starts = _starts(_logs(client, job["id"]))
    assert starts[1] == "-" and starts[2].endswith("resume.ckpt"), starts  # TENSORFLEET_RESUME_CHECKPOINT
    history = _output_history(client, job["id"], tmp_path)
    assert [epoch for epoch, _ in history] == list(range(8)), history
    assert {attempt for epoch, attempt in history if epoch > stopped_at} == {2}, history


# ---------------------------------------------------------------- retries


def test_a_failed_attempt_is_retried_and_continues_from_its_last_checkpoint(cluster: Cluster, tmp_path: Path) -> None:
    client = cluster.client
    project = _project(cluster.root, "retry")
    job = client.submit_project(project, [*COMMAND, "--epochs", "5", "--fail-at", "2"], max_retries=1)
    done = client.wait(job["id"], 90)
    assert done["state"] == "SUCCEEDED", (done["error"], _logs(client, job["id"])[-20:])
    detail = client.job(job["id"])
    (task,) = detail["task_list"]
    assert task["attempt"] == 2 and task["failures"] == 1 and task["replacements"] == 0, task
    assert detail["tasks"]["attempts"] == 2, detail["tasks"]
    events = _history(client, job["id"])
    failed = [e for e in events if e["kind"] == "task_state" and e["state"] in ("FAILED", "PENDING") and e["message"]]
    assert any("exited with code 3" in e["message"] for e in failed), [e["message"] for e in failed]
    assert _steps_by_attempt(client, job["id"]) == {1: [0, 1], 2: [2, 3, 4]}
    starts = _starts(_logs(client, job["id"]))
    assert starts[1] == "-" and starts[2].endswith("resume.ckpt"), starts
    assert _output_history(client, job["id"], tmp_path) == [[0, 1], [1, 1], [2, 2], [3, 2], [4, 2]]


def test_a_project_paused_while_preparing_stops_its_env_build_and_waits_paused(cluster: Cluster) -> None:
    """Paused before its command ever ran: nothing to checkpoint, so the build is stopped at once, the task waits
    (no failure counted) and the job stays PAUSED; resumed, the task is prepared again (then cancelled here)."""
    client = cluster.client
    pidfile = cluster.root / "slow-backend.pid"
    requirement = pf.add_slow_sdist(cluster.house, pidfile)
    project = _project(cluster.root, "pause-preparing", requirements=f"{requirement}\n")
    job = client.submit_project(project, COMMAND, max_retries=0)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the slow build backend to start")
    backend = int(pidfile.read_text())
    assert client.job(job["id"])["task_list"][0]["state"] == "PREPARING"
    asked = time.time()
    assert client.pause(job["id"])["state"] == "PAUSED"
    paused = wait_until(
        lambda: (j := client.job(job["id"]))["task_list"][0]["state"] == "PENDING" and j, 30, "the task stopped"
    )
    (task,) = paused["task_list"]
    assert paused["state"] == "PAUSED" and task["failures"] == 0 and task["attempt"] == 1, task
    wait_until(lambda: not _alive(backend), PAUSE_DEADLINE_S, "uv's build backend to be killed")
    stopped = _first_event(
        client, job["id"], lambda e: e["kind"] == "task_state" and e["state"] == "PENDING" and e["time"] >= asked
    )["time"]
    assert stopped - asked < PAUSE_DEADLINE_S, stopped - asked
    cluster.controller.after_scheduler_passes()
    assert client.job(job["id"])["task_list"][0]["attempt"] == 1  # not placed again while paused

    pidfile.unlink()
    client.resume(job["id"])  # prepared again from the start (here it stalls again: then cancelled)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the env build to start again")
    again = client.job(job["id"])["task_list"][0]
    assert again["state"] == "PREPARING" and again["attempt"] == 2, again
    client.cancel(job["id"])
    assert client.wait(job["id"], 30)["state"] == "CANCELLED"
    second = int(pidfile.read_text())
    wait_until(lambda: not _alive(second), PAUSE_DEADLINE_S, "the second build backend to be killed")


# ---------------------------------------------------------------- a gang


def test_a_paused_two_rank_project_resumes_both_ranks_from_rank_0s_checkpoint(cluster: Cluster) -> None:
    client = cluster.client
    project = _project(cluster.root, "gang")
    job = client.submit_project(project, [*COMMAND, "--epochs", "8"], num_workers=2, max_retries=0)
    _wait_checkpoint(client, job["id"], 1)
    client.pause(job["id"])
    paused = wait_until(
        lambda: (j := client.job(job["id"])) and all(t["state"] == "PENDING" for t in j["task_list"]) and j,
        30,
        "both ranks stopped",
    )
    assert paused["state"] == "PAUSED"
    assert [t["exit_cause"] for t in paused["task_list"]] == ["stopped", "stopped"], paused["task_list"]
    latest = max((a for a in paused["artifacts"] if a["kind"] == "checkpoint"), key=lambda a: a["step"])

    client.resume(job["id"])
    done = client.wait(job["id"], 90)
    assert done["state"] == "SUCCEEDED", (done["error"], _logs(client, job["id"])[-20:])
    assert [t["attempt"] for t in done["task_list"]] == [2, 2], done["task_list"]
    lines = _logs(client, job["id"])
    for rank in (0, 1):
        steps = _steps_by_attempt(client, job["id"], rank)
        assert steps[2][0] == latest["step"] + 1 and steps[2][-1] == 7, (rank, latest["step"], steps)
        starts = _starts(lines, rank)
        assert starts[1] == "-" and starts[2].endswith("resume.ckpt"), (rank, starts)


# ---------------------------------------------------------------- the loss of an agent (last: it kills one)


def test_a_project_task_whose_agent_dies_is_replaced_on_the_other_and_resumes(cluster: Cluster, tmp_path: Path) -> None:
    client = cluster.client
    project = _project(cluster.root, "lost")
    job = client.submit_project(project, [*COMMAND, "--epochs", "14", "--epoch-seconds", "0.4"], max_retries=0)
    running = _wait_checkpoint(client, job["id"], 1)
    (first,) = running["task_list"]
    victim = next(a for a in cluster.agents if a.info["node_id"] == first["node_id"])
    survivor = next(a for a in cluster.agents if a is not victim)
    saved = max((a for a in running["artifacts"] if a["kind"] == "checkpoint"), key=lambda a: a["step"])
    client.download_artifact(job["id"], saved["name"], tmp_path)  # in the controller's store before the loss

    killed_at = _kill_machine(victim)

    done = client.wait(job["id"], 120)
    assert done["state"] == "SUCCEEDED", (done["error"], _logs(client, job["id"])[-20:])
    (task,) = done["task_list"]
    assert task["node_id"] == survivor.info["node_id"] != first["node_id"], task
    assert task["replacements"] == 1 and task["failures"] == 0 and task["attempt"] == 2, task
    lost = next(a for a in client.agents() if a["id"] == first["node_id"])
    assert lost["state"] == "LOST" and lost["state_since"] - killed_at < LOST_DEADLINE_S, lost
    events = _history(client, job["id"])
    again = next(
        e["time"] for e in events if e["kind"] == "task_state" and e["state"] == "RUNNING" and e["time"] > killed_at
    )
    assert again - killed_at < REPLACED_DEADLINE_S, again - killed_at
    print(f"agent killed -> LOST in {lost['state_since'] - killed_at:.2f}s, running again in {again - killed_at:.2f}s")

    # the survivor got the project's files pushed (or had them) and built or reused the same env
    assert task["environment"] is not None and task["environment"]["key"] == first["environment"]["key"], task
    pushed = re.findall(rf"job {job['id']}: sent \d+ of \d+ project blob\(s\) to (\w+)", cluster.controller.logs())
    assert survivor.info["node_id"][:12] in pushed, pushed  # its name is in a file no earlier job had

    steps = _steps_by_attempt(client, job["id"])
    resumed_from = steps[2][0] - 1
    assert resumed_from >= saved["step"], (saved, steps)  # from the last checkpoint, not from the start
    assert steps[2][-1] == 13, steps
    starts = _starts(_logs(client, job["id"]))
    assert starts[1] == "-" and starts[2].endswith("resume.ckpt"), starts
    history = _output_history(client, job["id"], tmp_path)
    assert [epoch for epoch, _ in history] == list(range(14)), history
    assert history[resumed_from + 1 :] == [[e, 2] for e in range(resumed_from + 1, 14)], history
    _restart(cluster, victim)  # for the next test


def test_a_two_rank_project_losing_an_agent_restarts_both_ranks_from_rank_0s_checkpoint(cluster: Cluster) -> None:
    client = cluster.client
    project = _project(cluster.root, "lost-gang")
    command = [*COMMAND, "--epochs", "12", "--epoch-seconds", "0.4"]
    job = client.submit_project(project, command, num_workers=2, max_retries=0)
    running = _wait_checkpoint(client, job["id"], 1)
    first = running["task_list"]
    assert all(t["state"] == "RUNNING" for t in first), first
    saved = max((a for a in running["artifacts"] if a["kind"] == "checkpoint"), key=lambda a: a["step"])
    client.download_artifact(job["id"], saved["name"], cluster.root / "lost-gang-ckpt")
    victim = next(a for a in cluster.agents if a.info["node_id"] == first[1]["node_id"])  # rank 1's agent
    _kill_machine(victim)

    done = client.wait(job["id"], 120)
    assert done["state"] == "SUCCEEDED", (done["error"], _logs(client, job["id"])[-20:])
    ranks = done["task_list"]
    assert [t["attempt"] for t in ranks] == [2, 2], ranks  # the whole gang again, together
    assert all(t["failures"] == 0 for t in ranks), ranks
    assert ranks[1]["replacements"] == 1, ranks
    assert victim.info["node_id"] not in {t["node_id"] for t in ranks}, ranks
    lines = _logs(client, job["id"])
    resumed = []
    for rank in (0, 1):
        steps = _steps_by_attempt(client, job["id"], rank)
        assert steps[2][-1] == 11, (rank, steps)
        resumed.append(steps[2][0] - 1)
        starts = _starts(lines, rank)
        assert starts[1] == "-" and starts[2].endswith("resume.ckpt"), (rank, starts)
    assert resumed[0] == resumed[1] >= saved["step"], (resumed, saved)  # both from the same checkpoint of rank 0
