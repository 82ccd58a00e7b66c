"""Breaking the simulated LAN on purpose: each scenario checks its outcome from the stored history.

A controller on `ctl` and agents on h1..h3 (h4 joins for the full-disk scenario), all real processes
over real multicast mDNS, gRPC with TLS and pairing. Every scenario asserts that the job's stored
events and metrics are whole (`check_history`): nothing lost, nothing duplicated, no task completed
twice; and records its figures (detection and recovery times), printed at the end of the run.
"""

from __future__ import annotations

import csv
import random
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.history import first_event_after
from helpers.lan import Lan
from helpers.lan_cluster import LanCluster, fill_disk, small_tmpfs
from helpers.waiting import wait_until
from tensorfleet_agent.core.types import Finished
from tensorfleet_agent.runtime.journal import EVENTS_FILE, read_events

pytestmark = [pytest.mark.slow, pytest.mark.lan]
LAN_HOSTS = ["ctl", "h1", "h2", "h3", "h4"]
LAN_AGENTS = ["h1", "h2", "h3"]
LOST_DEADLINE = 3.0  # the goal for detecting a dead agent
MARGIN = 0.5
Figures = Callable[..., None]


def _task_on(client: Any, job_id: str, host: str | None = None, timeout: float = 60) -> dict[str, Any]:
    """The first RUNNING task of the job (on `host`'s agent, if given)."""

    def running() -> dict[str, Any] | None:
        for task in client.job(job_id)["task_list"]:
            if task["state"] == "RUNNING" and (host is None or task["agent"] == f"agent-{host}"):
                return task
        return None

    found: dict[str, Any] = wait_until(running, timeout, f"a running task of {job_id} on {host or 'any agent'}")
    return found


def _agent_state(cluster: LanCluster, host: str, state: str, timeout: float) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: (a := cluster.agent_record(host))["state"] == state and a, timeout, f"agent-{host} {state}"
    )
    return found


def _wall(job: dict[str, Any]) -> float:
    """Seconds from submit to the job's end."""
    return float(job["finished_at"] - job["created_at"])


def _journal_end(cluster: LanCluster, host: str, attempt: str) -> dict[str, Any] | None:
    """The last event an agent wrote to an attempt's journal, if that is its end (`finished`)."""
    path = cluster.data_dirs[host] / "tasks" / attempt / EVENTS_FILE
    events = read_events(path) if path.exists() else []
    if not events or not isinstance(end := events[-1].payload, Finished):
        return None
    return {"status": end.status.value, "exit_cause": end.exit_cause, "time": events[-1].time}


def test_agent_killed_mid_sweep_then_restarted_with_its_identity(
    lan_cluster: LanCluster, fault_figures: Figures
) -> None:
    client = lan_cluster.client
    job = client.submit(
        {
            "algorithm": "random_forest",
            "dataset": "digits",
            "max_retries": 0,
            "sweep": {
                "params": {"n_estimators": "int:80:160", "max_depth": "int:8:16"},
                "search": "random",
                "trials": 9,
            },
        }
    )
    victim_task = _task_on(client, job["id"], "h2")
    victim = lan_cluster.agents["h2"]
    before = lan_cluster.agent_record("h2")
    killed_at = victim.kill()
    lost = _agent_state(lan_cluster, "h2", "LOST", 10)
    detection = lost["state_since"] - killed_at
    assert detection < LOST_DEADLINE + MARGIN, f"LOST after {detection:.2f}s"

    final = client.wait(job["id"], timeout=240)
    assert final["state"] == "SUCCEEDED", final["error"]
    events = lan_cluster.history(job["id"])
    trials = final["task_list"]
    assert len(trials) == 9 and all(t["state"] == "SUCCEEDED" for t in trials)
    moved = trials[victim_task["index"]]
    assert moved["agent"] != "agent-h2" and moved["replacements"] == 1 and moved["failures"] == 0
    assert moved["params"] == victim_task["params"]  # the same trial, re-placed, not a new one
    rerun = first_event_after(events, killed_at, kind="task_state", state="RUNNING", task_index=victim_task["index"])

    restarted_at = time.time()
    victim.start()
    back = _agent_state(lan_cluster, "h2", "ONLINE", 30)
    assert (back["id"], back["fingerprint"], back["paired"]) == (before["id"], before["fingerprint"], True)
    end = wait_until(lambda: _journal_end(lan_cluster, "h2", victim_task["agent_task_id"]), 10, "journal end")
    assert (end["status"], end["exit_cause"]) == ("FAILED", "agent_restarted")
    assert client.job(job["id"])["tasks"]["attempts"] == 10  # the orphan did not run again
    fault_figures(
        lost_detection_s=detection,
        recovery_to_rerun_s=rerun["time"] - killed_at,
        restart_to_online_s=back["state_since"] - restarted_at,
        sweep_wall_s=_wall(final),
    )


def test_gang_replaced_from_its_checkpoint_when_a_rank_agent_dies(
    lan_cluster: LanCluster, fault_figures: Figures
) -> None:
    """2 ranks of DDP (gloo over eth0) on 3 agents; a rank's agent dies; the gang restarts on the survivors."""
    client = lan_cluster.client
    lan_cluster.wait_online(3)
    job = client.submit(
        {
            "algorithm": "torch_mlp",
            "dataset": "digits",
            "num_workers": 2,
            "max_retries": 0,
            "hyperparameters": {"epochs": 12, "checkpoint_every": 1, "batch_size": 32},
        }
    )
    running = wait_until(
        lambda: (
            (j := client.job(job["id"]))
            and any(a["kind"] == "checkpoint" and a["step"] >= 2 for a in j["artifacts"])
            and j
        ),
        180,
        "a checkpoint",
    )
    victim = lan_cluster.host_of(running["task_list"][1]["node_id"])
    killed_at = lan_cluster.agents[victim].kill()
    lost = _agent_state(lan_cluster, victim, "LOST", 10)
    final = client.wait(job["id"], timeout=300)
    assert final["state"] == "SUCCEEDED", final["error"]
    events = lan_cluster.history(job["id"])
    ranks = final["task_list"]
    assert [t["attempt"] for t in ranks] == [2, 2]
    assert len({t["node_id"] for t in ranks}) == 2 and all(t["agent"] != f"agent-{victim}" for t in ranks)
    assert ranks[0]["metrics"]["param_checksum"] == ranks[1]["metrics"]["param_checksum"]
    resumed = [r["line"] for r in client.logs(job["id"]) if r["line"].startswith("resumed from checkpoint of epoch")]
    assert resumed
    epochs = [p["value"] for p in client.metrics(job["id"], ["epoch"]) if p["agent_task_id"].endswith("-a2")]
    assert epochs[0] > 1 and epochs[-1] == 12  # the second attempt went on from the checkpoint
    rerun = first_event_after(events, killed_at, kind="task_state", state="RUNNING", task_index=0)
    lan_cluster.agents[victim].start()
    lan_cluster.wait_online(3)
    fault_figures(
        lost_detection_s=lost["state_since"] - killed_at,
        recovery_to_gang_running_s=rerun["time"] - killed_at,
        job_wall_s=_wall(final),
    )


def test_link_down_10s_then_up(lan_cluster: LanCluster, lan: Lan, fault_figures: Figures) -> None:
    """The task moves while its agent is cut off; the agent comes back and its stale attempt is cancelled."""
    client = lan_cluster.client
    lan_cluster.wait_online(3)
    job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 17}, "max_retries": 0})
    task = _task_on(client, job["id"])
    host = lan_cluster.host_of(task["node_id"])
    down_at = time.time()
    lan.set_link(host, up=False)
    try:
        lost = _agent_state(lan_cluster, host, "LOST", 10)
        assert lost["state_since"] - down_at < LOST_DEADLINE + MARGIN, "a silent agent must be LOST within 3 s"
        moved = _task_on(client, job["id"], timeout=30)
        assert moved["agent"] != f"agent-{host}" and moved["attempt"] == 2
        time.sleep(max(0.0, down_at + 10 - time.time()))  # the scenario, not a wait: the link stays down 10 s
    finally:
        lan.set_link(host, up=True)
    up_at = time.time()
    back = _agent_state(lan_cluster, host, "ONLINE", 30)
    stale = wait_until(lambda: _journal_end(lan_cluster, host, task["agent_task_id"]), 20, "stale attempt cancelled")
    assert stale["exit_cause"] == "cancelled", stale  # stopped by the controller, never completed
    final = client.wait(job["id"], timeout=60)
    assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 2
    events = lan_cluster.history(job["id"])
    rerun = first_event_after(events, down_at, kind="task_state", state="RUNNING", task_index=0)
    fault_figures(
        lost_detection_s=lost["state_since"] - down_at,
        recovery_to_rerun_s=rerun["time"] - down_at,
        link_up_to_online_s=back["state_since"] - up_at,
        stale_cancelled_after_up_s=stale["time"] - up_at,
    )


def _csv(path: Path, rows: int, features: int) -> Path:
    rng = random.Random(7)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*(f"f{i}" for i in range(features)), "label"])
        for _ in range(rows):
            x = [rng.gauss(0, 1) for _ in range(features)]
            out.writerow([*(f"{v:.6f}" for v in x), "yes" if sum(x[:3]) > 0 else "no"])
    return path


def test_slow_and_lossy_links_still_finish_jobs(lan_cluster: LanCluster, lan: Lan, fault_figures: Figures) -> None:
    """h3 gets 1 Mbit/s (tc tbf) and loses 3% of its packets both ways (iptables statistic)."""
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed (apt-get install iptables): it makes the lossy link")
    client = lan_cluster.client
    lan_cluster.wait_online(3)
    dataset = client.upload_dataset(_csv(lan_cluster.tmp / "lossy.csv", 3000, 12))

    def run_on(host: str) -> dict[str, Any]:
        job = client.submit(
            {
                "algorithm": "logistic_regression",
                "dataset": dataset["name"],
                "target": "label",
                "max_retries": 0,
                "constraints": {"on": [f"agent-{host}"]},
            }
        )
        final: dict[str, Any] = client.wait(job["id"], timeout=180)
        assert final["state"] == "SUCCEEDED", final["error"]
        assert final["task_list"][0]["agent"] == f"agent-{host}" and final["metrics"]["test_accuracy"] > 0.8
        lan_cluster.history(job["id"])
        return final

    clean = run_on("h2")
    lan.limit_rate("h3", "1mbit")
    lan.drop_packets("h3", 0.03)
    try:
        faulty = run_on("h3")
        agent = lan_cluster.agent_record("h3")
    finally:
        lan.clear_link_faults("h3")
    assert agent["state"] == "ONLINE"
    fault_figures(
        dataset_bytes=dataset["size"],
        clean_job_s=_wall(clean),
        slow_lossy_job_s=_wall(faulty),
    )


def test_drain_on_sigterm_finishes_running_work_and_takes_no_new(
    lan_cluster: LanCluster, fault_figures: Figures
) -> None:
    client = lan_cluster.client
    lan_cluster.wait_online(3)
    job = client.submit(
        {"algorithm": "sleep", "hyperparameters": {"seconds": 4}, "max_retries": 0, "constraints": {"on": ["agent-h1"]}}
    )
    _task_on(client, job["id"], "h1")
    agent = lan_cluster.agents["h1"]
    signalled_at = agent.terminate()
    _agent_state(lan_cluster, "h1", "DRAINING", 5)
    draining_seen_at = time.time()
    later = client.submit({"algorithm": "noop", "max_retries": 0})
    assert client.wait(later["id"], timeout=60)["task_list"][0]["agent"] != "agent-h1"
    assert agent.wait(60) == 0
    exited_at = time.time()
    final = client.wait(job["id"], timeout=30)
    assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 1  # finished where it was, not moved
    lan_cluster.history(job["id"])
    gone = _agent_state(lan_cluster, "h1", "LOST", 10)
    assert "after draining" in gone["error"], gone["error"]
    agent.start()
    lan_cluster.wait_online(3)
    fault_figures(
        draining_seen_within_s=draining_seen_at - signalled_at,
        drain_to_exit_s=exited_at - signalled_at,
    )


@pytest.fixture
def tmpfs_agent(lan_cluster: LanCluster) -> Iterator[Path]:
    """An agent on h4 whose data dir is a 160 MiB tmpfs: a disk that can be filled."""
    with small_tmpfs(lan_cluster.tmp / "agent-h4-disk", "160m") as disk:
        agent = lan_cluster.add_agent("h4", data_dir=disk)
        try:
            agent.start()
            yield disk
        finally:
            agent.stop()


def test_disk_full_while_checkpointing_fails_clearly_and_moves(
    lan_cluster: LanCluster, tmpfs_agent: Path, fault_figures: Figures
) -> None:
    client = lan_cluster.client
    lan_cluster.wait_online(4)
    blocker = client.submit(
        {"algorithm": "sleep", "hyperparameters": {"seconds": 120}, "constraints": {"on": ["agent-h1"]}}
    )
    _task_on(client, blocker["id"], "h1")
    job = client.submit(
        {
            "algorithm": "torch_mlp",
            "dataset": "digits",
            "max_retries": 2,
            # the disk fills once the first checkpoint is stored and the attempt on h4 fails a moment later; the
            # epochs after that are the resumed attempt's work on h1 (15 leave a wide margin, 30 added only time)
            "hyperparameters": {"epochs": 15, "checkpoint_every": 1, "batch_size": 32},
            "constraints": {"on": ["agent-h4", "agent-h1"]},
        }
    )
    wait_until(
        lambda: any(a["kind"] == "checkpoint" for a in client.job(job["id"])["artifacts"]), 120, "a first checkpoint"
    )
    filled_at = time.time()
    filler = fill_disk(tmpfs_agent)
    wait_until(lambda: client.job(job["id"])["task_list"][0]["failures"] == 1, 60, "the attempt on h4 failing")
    full = wait_until(lambda: (a := lan_cluster.agent_record("h4"))["error"] and a, 5, "h4 listed as full")
    assert "disk full" in full["error"] and full["state"] == "ONLINE"  # alive, and no new tasks go there
    client.cancel(blocker["id"])
    final = client.wait(job["id"], timeout=180)
    assert final["state"] == "SUCCEEDED", final["error"]
    task = final["task_list"][0]
    assert task["agent"] == "agent-h1" and task["attempt"] == 2
    events = lan_cluster.history(job["id"])
    failed_event = first_event_after(events, filled_at, kind="task_state", state="FAILED", task_index=0)
    assert "disk full on this agent" in failed_event["message"], failed_event["message"]
    assert any(r["line"].startswith("resumed from checkpoint") for r in client.logs(job["id"]))
    assert lan_cluster.agents["h4"].running  # the agent itself never fell over
    filler.unlink()
    wait_until(lambda: "disk full" not in lan_cluster.agent_record("h4")["error"], 10, "disk no longer full")
    fault_figures(failed_after_fill_s=failed_event["time"] - filled_at, job_wall_s=_wall(final))


def test_controller_killed_and_restarted_mid_job(lan_cluster: LanCluster, fault_figures: Figures) -> None:
    client = lan_cluster.client
    controller = lan_cluster.controller
    assert controller is not None
    job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 400, "rate": 80}})
    wait_until(lambda: client.job(job["id"])["metrics"].get("value", 0) > 50, 30, "some points")
    killed_at = controller.kill()
    time.sleep(1.0)  # the scenario, not a wait: the job runs on without a controller and the restart catches up
    controller.start()
    ready_at = time.time()
    lan_cluster.wait_online(3)
    online_at = time.time()
    final = client.wait(job["id"], timeout=60)
    assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 1  # re-attached, not re-run
    lan_cluster.history(job["id"])
    steps = [p["step"] for p in client.metrics(job["id"]) if p["name"] == "value"]
    assert steps == list(range(400)), "the stored series has a gap or a duplicate"
    fault_figures(
        restart_to_ready_s=ready_at - killed_at - 1.0,
        ready_to_agents_online_s=online_at - ready_at,
    )
