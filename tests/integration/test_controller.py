"""Controller + agents on loopback: real processes, real mDNS on 127.0.0.1, real CLI and SDK. The life of a job:
submit, wait, cancel, pause, retries, lost agents and ranks, a killed controller, timeouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json, online, record_seqs
from helpers.waiting import wait_until
from tensorfleet_agent.workloads.datasets import data_sha256
from tensorfleet_agent.workloads.datasets import load as load_dataset
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def test_agents_found_over_mdns_and_listed(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, agents = shared_cluster
    listed = cli_json(controller.cli("agents", "--json"))
    assert sorted(a["name"] for a in listed) == ["agent-0", "agent-1"]
    by_id = {a["id"]: a for a in listed}
    for agent in agents:
        entry = by_id[str(agent.info["node_id"])]
        assert entry["address"] == agent.address and entry["source"] == "mdns" and entry["state"] == "ONLINE"
        assert entry["slots_total"] == 1 and entry["slots_free"] == 1 and entry["gpus"] == 0
        assert set(entry) >= {"paired", "labels", "last_seen", "state_since"}
    with Client(controller.address) as client:  # telemetry: free and total disk for the Fleet view's bar
        agents_now = wait_until(
            lambda: (rows := client.agents()) and all(a["disk_total_bytes"] > 0 for a in rows) and rows, 15, "telemetry"
        )
    assert all(0 < a["disk_free_bytes"] <= a["disk_total_bytes"] for a in agents_now)


def test_submit_from_cli_waits_and_reports(cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = cluster
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "random_forest",
            "--dataset",
            "iris",
            "--param",
            "n_estimators=20",
            "--param",
            "max_depth=null",
            "--model-name",
            "iris-rf",
            "--wait",
            "--json",
        )
    )
    assert job["state"] == "SUCCEEDED" and job["progress"] == 1.0
    assert job["tasks"] == {"total": 1, "completed": 1, "failed": 0, "attempts": 1}
    assert job["metrics"]["test_accuracy"] > 0.8 and "training_time" in job["metrics"]
    assert job["model"] == {"name": "iris-rf", "version": 1}  # registered before the job reads as SUCCEEDED
    with Client(controller.address) as client:  # a built-in dataset's lineage names its content, as a file's would
        x, y, _, _ = load_dataset("iris", {})
        assert client.model("iris-rf")["dataset"]["sha256"] == data_sha256(x, y)
    assert sorted(a["kind"] for a in job["artifacts"]) == ["model", "report"]
    assert job["started_at"] and job["finished_at"] and job["error"] == ""
    status = cli_json(controller.cli("status", job["id"], "--json"))
    assert status["id"] == job["id"] and status["state"] == "SUCCEEDED"
    listed = cli_json(controller.cli("jobs", "--json"))
    assert [j["id"] for j in listed] == [job["id"]]
    # the controller copied the model artifact into its own blob store
    sha = next(a["sha256"] for a in job["artifacts"] if a["kind"] == "model")
    assert wait_until(lambda: (controller.data_dir / "blobs" / sha[:2] / sha).exists(), 10, "artifact copy")
    logs = controller.cli("logs", job["id"])
    assert logs.returncode == 0 and "train_accuracy=" in logs.stdout
    csv_out = controller.cli("metrics", job["id"], "--csv")
    assert csv_out.stdout.splitlines()[0] == "task_index,step,name,value,wall_time"


def test_sdk_submit_emit_stores_every_point_once(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 500}})
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED"
        steps = [p["step"] for p in client.metrics(job["id"]) if p["name"] == "value"]
        assert steps == list(range(500))
        events = list(client.watch(job["id"]))
        seqs = [seq for e in events for seq in record_seqs(e)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert sum(len(e["points"]) for e in events if e["kind"] == "metrics") == 500


def test_cancel_pause_resume_resubmit(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}})
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "RUNNING", 30, "running")
        cancelled = cli_json(controller.cli("cancel", job["id"], "--json"))
        assert cancelled["state"] == "CANCELLED"
        wait_until(lambda: sum(a["slots_free"] for a in client.agents()) == 2, 10, "slots freed")
        assert controller.cli("cancel", job["id"]).returncode == 2  # already over

        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 2}})
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "RUNNING", 30, "running")
        assert cli_json(controller.cli("pause", job["id"], "--json"))["state"] == "PAUSED"
        wait_until(lambda: client.job(job["id"])["task_list"][0]["state"] == "PENDING", 10, "the task stopped")
        controller.after_scheduler_passes()  # a paused job is not placed again
        paused = client.job(job["id"])
        assert paused["state"] == "PAUSED" and paused["task_list"][0]["state"] == "PENDING"
        assert paused["tasks"]["attempts"] == 1
        assert cli_json(controller.cli("resume", job["id"], "--json"))["state"] == "QUEUED"
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 2

        copy = cli_json(controller.cli("resubmit", job["id"], "--param", "seconds=0.1", "--json"))
        assert copy["id"] != job["id"]
        assert client.job(copy["id"])["spec"]["hyperparameters"]["seconds"] == 0.1
        assert client.wait(copy["id"], timeout=60)["state"] == "SUCCEEDED"


def test_failed_job_retries_then_fails_and_can_be_retried(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "fail", "hyperparameters": {"mode": "exit", "code": 9}, "max_retries": 1})
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "FAILED" and "exit_code" in final["error"] and "code 9" in final["error"]
        assert final["tasks"]["attempts"] == 2 and final["task_list"][0]["failures"] == 2
        waited = controller.cli("submit", "--algorithm", "fail", "--max-retries", "0", "--wait")
        assert waited.returncode == 1
        again = cli_json(controller.cli("retry", job["id"], "--json"))
        assert again["state"] == "QUEUED"
        assert client.wait(job["id"], timeout=60)["state"] == "FAILED"


def test_agent_killed_is_lost_within_3s_and_job_moves(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, agents = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 4}, "max_retries": 0})
        task = wait_until(
            lambda: (t := client.job(job["id"])["task_list"][0])["state"] == "RUNNING" and t, 30, "running"
        )
        victim = next(a for a in agents if a.info["node_id"] == task["node_id"])
        killed_at = time.time()
        victim.kill()
        lost = wait_until(
            lambda: next((a for a in client.agents() if a["id"] == task["node_id"] and a["state"] == "LOST"), None),
            10,
            "LOST",
        )
        assert lost["state_since"] - killed_at < 3.0, f"LOST after {lost['state_since'] - killed_at:.2f}s"
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED"
        t = final["task_list"][0]
        assert t["node_id"] != task["node_id"] and t["replacements"] == 1 and t["failures"] == 0
        assert final["tasks"]["attempts"] == 2
        # the agent comes back with the same identity and is ONLINE again
        victim.start()
        wait_until(lambda: online(client).get(victim.name), 20, "agent back")


def test_controller_killed_and_restarted_mid_job(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 400, "rate": 100}})
        wait_until(lambda: client.job(job["id"])["metrics"].get("value", 0) > 50, 30, "some points")
    controller.kill()
    time.sleep(1.0)  # the scenario, not a wait: the job runs on without a controller and the restart catches up
    controller.start()
    with Client(controller.address) as client:
        final = client.wait(job["id"], timeout=60)
        assert final["state"] == "SUCCEEDED" and final["tasks"]["attempts"] == 1  # re-attached, not re-run
        steps = [p["step"] for p in client.metrics(job["id"]) if p["name"] == "value"]
        assert steps == list(range(400)), "the stored series has a gap or a duplicate"
        seqs = [seq for e in client.watch(job["id"]) for seq in record_seqs(e)]
        assert seqs == list(range(1, len(seqs) + 1))


def test_gang_waits_for_capacity_while_small_jobs_backfill(
    cluster: tuple[ControllerProcess, list[AgentProcess]], agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        gang = client.submit(
            {"algorithm": "sleep", "hyperparameters": {"seconds": 0.5}, "num_workers": 3, "priority": 10}
        )
        smalls = [client.submit({"algorithm": "noop"}) for _ in range(3)]
        for small in smalls:
            assert client.wait(small["id"], timeout=60)["state"] == "SUCCEEDED"
        assert client.job(gang["id"])["state"] == "QUEUED"
        agent_factory(tmp_path / "agent-3", name="agent-3", cpu_slots=1).start()
        final = client.wait(gang["id"], timeout=60)
        assert final["state"] == "SUCCEEDED"
        assert len({t["node_id"] for t in final["task_list"]}) == 3


def test_lost_rank_replaces_the_whole_gang(
    cluster: tuple[ControllerProcess, list[AgentProcess]], agent_factory: type[AgentProcess], tmp_path: Path
) -> None:
    controller, agents = cluster
    spare = agent_factory(tmp_path / "agent-spare", name="agent-spare", cpu_slots=1).start()
    with Client(controller.address) as client:
        wait_until(lambda: len(online(client)) == 3, 20, "3 agents")
        job = client.submit(
            {"algorithm": "sleep", "hyperparameters": {"seconds": 3}, "num_workers": 2, "max_retries": 0}
        )
        running = wait_until(
            lambda: (
                (j := client.job(job["id"]))["task_list"][1]["state"] == "RUNNING"
                and j["task_list"][0]["state"] == "RUNNING"
                and j
            ),
            30,
            "gang running",
        )
        first_nodes = {t["node_id"] for t in running["task_list"]}
        victim = next(a for a in [*agents, spare] if a.info["node_id"] == running["task_list"][1]["node_id"])
        victim.kill()
        final = client.wait(job["id"], timeout=90)
    assert final["state"] == "SUCCEEDED"
    assert [t["attempt"] for t in final["task_list"]] == [2, 2]  # both ranks restarted together
    assert victim.info["node_id"] not in {t["node_id"] for t in final["task_list"]}
    assert all(t["failures"] == 0 for t in final["task_list"])
    assert len(first_nodes) == 2


def test_job_wall_clock_timeout(shared_cluster: tuple[ControllerProcess, list[AgentProcess]]) -> None:
    controller, _ = shared_cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 60}, "timeout": 1.5})
        final = client.wait(job["id"], timeout=30)
        assert final["state"] == "FAILED" and final["error"] == "timed out after 1.5s"
        assert final["finished_at"] - final["started_at"] < 4
        wait_until(lambda: sum(a["slots_free"] for a in client.agents()) == 2, 10, "slots freed")
        client.retry(job["id"])  # a new run, timed from its own start
        again = client.wait(job["id"], timeout=30)
        assert again["state"] == "FAILED" and again["error"] == "timed out after 1.5s"
        assert again["started_at"] > final["finished_at"] and 1.5 <= again["finished_at"] - again["started_at"] < 4
        wait_until(lambda: sum(a["slots_free"] for a in client.agents()) == 2, 10, "slots freed")
