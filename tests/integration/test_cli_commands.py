"""The commands and options users reach for, each checked for what they print, their --json shape and exit code.

One cluster for the whole module (a controller with its local agent, `--local-agent-slots 2 --keep-checkpoints 2`,
and two agents both named "twin", one started with `--no-scripts`), tiny jobs only: the module costs one cluster
start. Tests that change the fleet (draining a twin) come last.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import itertools
import json
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json, tensorfleet
from helpers.waiting import wait_until
from tensorfleet_agent.core.types import BlobRef, TaskSpec
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

DEAD = "127.0.0.1:1"  # nothing listens there: connection refused at once


@dataclass
class Fleet:
    controller: ControllerProcess
    no_scripts: AgentProcess  # "twin", started with --no-scripts
    scripts: AgentProcess  # "twin" too, another node id

    @property
    def address(self) -> str:
        return self.controller.address


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("cli-commands")
    no_scripts = AgentProcess(root / "twin-a", name="twin", cpu_slots=1, extra_args=["--no-scripts"])
    # a spare worker with scikit-learn imported (as on the local agent): the registry test's trees skip that import
    scripts = AgentProcess(root / "twin-b", name="twin", cpu_slots=1, spare_workers=1)
    controller = ControllerProcess(
        root / "controller", local_agent=True, extra_args=["--local-agent-slots", "2", "--keep-checkpoints", "2"]
    )
    processes: list[AgentProcess | ControllerProcess] = [no_scripts, scripts, controller]
    try:
        for process in processes:  # start together: the controller finds the twins as they come
            process.spawn()
        no_scripts.wait_ready()
        scripts.wait_ready()
        controller.wait_ready()
        with Client(controller.address) as client:
            wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 3, 30, "local agent + 2 twins")
        yield Fleet(controller, no_scripts, scripts)
    finally:
        for agent in (no_scripts, scripts):
            agent.signal_stop()
        controller.stop()
        for agent in (no_scripts, scripts):
            agent.stop()


def _finished(client: Client, *specs: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit all, then wait for each: they run side by side."""
    ids = [client.submit(spec)["id"] for spec in specs]
    return [client.wait(job_id, timeout=120) for job_id in ids]


def test_local_agent_slots_and_two_agents_with_one_name(fleet: Fleet) -> None:
    listed = cli_json(fleet.controller.cli("agents", "--json"))
    local = [a for a in listed if a["source"] == "local"]
    assert len(local) == 1 and local[0]["slots_total"] == 2 and local[0]["state"] == "ONLINE"  # --local-agent-slots 2
    twins = sorted((a for a in listed if a["name"] == "twin"), key=lambda a: a["id"])
    expected = sorted(str(a.info["node_id"]) for a in (fleet.no_scripts, fleet.scripts))
    assert [a["id"] for a in twins] == expected and expected[0] != expected[1]  # both kept: identity is the node id
    assert {a["address"] for a in twins} == {fleet.no_scripts.address, fleet.scripts.address}
    assert [a["state"] for a in twins] == ["ONLINE", "ONLINE"]
    table = fleet.controller.cli("agents")
    assert table.returncode == 0 and table.stdout.count("twin") == 2, table.stdout
    assert all(node_id[:12] in table.stdout for node_id in expected)


def test_retry_back_off_doubles_from_1s_and_watch_follows_it_to_the_end(fleet: Fleet) -> None:
    """A task failing 3 times waits 1 s, 2 s, then 4 s before its next placement (event timestamps,
    with the scheduler's 0.5 s tick and a margin); `watch --json` follows the retries and exits 1."""
    with Client(fleet.address) as client:
        job = client.submit({"algorithm": "fail", "hyperparameters": {"message": "boom"}, "max_retries": 3})
    watched = fleet.controller.cli("watch", job["id"], "--json")
    assert watched.returncode == 1, watched.stderr  # the job it waited for failed
    events = json.loads(watched.stdout)
    # every stored event once, in order: a batch of log lines carries the seq of its last line
    sizes = [len(e.get("lines") or e.get("points") or [None]) for e in events]
    assert [e["seq"] for e in events] == list(itertools.accumulate(sizes))
    assert not any("job" in e for e in events) and {e["kind"] for e in events} >= {"job_state", "task_state", "logs"}
    assert events[-1]["kind"] == "job_state" and events[-1]["state"] == "FAILED"
    with Client(fleet.address) as client:
        error = client.job(job["id"])["error"]
    assert "boom" in error and "after 4 attempt(s)" in error, error
    waits = []
    for i, event in enumerate(events):
        if event["kind"] == "task_state" and "retrying in " in event["message"]:
            announced = float(event["message"].rsplit("retrying in ", 1)[1].rstrip("s"))
            placed = next(e for e in events[i + 1 :] if e["kind"] == "task_state" and "placed on" in e["message"])
            waits.append((announced, placed["time"] - event["time"]))
    assert [announced for announced, _ in waits] == [1.0, 2.0, 4.0], waits
    for announced, waited in waits:
        assert announced - 0.05 <= waited <= announced + 1.5, waits  # never early; late by at most a tick or so


def test_watch_prints_metrics_logs_and_states_and_exits_0(fleet: Fleet) -> None:
    with Client(fleet.address) as client:
        (job,) = _finished(client, {"algorithm": "emit", "hyperparameters": {"points": 3, "name": "gauge"}})
    assert job["state"] == "SUCCEEDED"
    watched = fleet.controller.cli("watch", job["id"])  # a finished job: its history, then the end
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert [line for line in lines if " step " in line] == [f"[0] step {i}: gauge = {i}" for i in range(3)]
    assert "task 0: SUCCEEDED succeeded" in lines and lines[-1].startswith("job: SUCCEEDED")
    assert any(line.startswith("[0] ") and "step" not in line for line in lines), lines  # the task's log lines
    assert fleet.controller.cli("watch", "j-nope").returncode == 2


def test_jobs_state_filter_and_limit(fleet: Fleet) -> None:
    with Client(fleet.address) as client:
        ok, failed = _finished(
            client, {"algorithm": "noop"}, {"algorithm": "fail", "hyperparameters": {"mode": "exit"}, "max_retries": 0}
        )
        everything = client.jobs()
    assert (ok["state"], failed["state"]) == ("SUCCEEDED", "FAILED")
    only_failed = cli_json(fleet.controller.cli("jobs", "--state", "failed", "--json"))
    assert only_failed and {j["state"] for j in only_failed} == {"FAILED"}
    assert failed["id"] in {j["id"] for j in only_failed}
    assert [j["id"] for j in only_failed] == [j["id"] for j in everything if j["state"] == "FAILED"]
    both = cli_json(fleet.controller.cli("jobs", "--state", "SUCCEEDED", "--state", "failed", "--json"))
    assert [j["id"] for j in both] == [j["id"] for j in everything if j["state"] in ("SUCCEEDED", "FAILED")]
    newest = cli_json(fleet.controller.cli("jobs", "--limit", "1", "--json"))
    assert [j["id"] for j in newest] == [everything[0]["id"]]  # newest first
    assert set(newest[0]) >= {"id", "name", "state", "progress", "tasks", "metrics", "created_at"}
    table = fleet.controller.cli("jobs", "--state", "succeeded")
    assert table.returncode == 0 and ok["id"] in table.stdout and failed["id"] not in table.stdout
    refused = fleet.controller.cli("jobs", "--limit", "-1")
    assert refused.returncode == 2 and "limit" in refused.stderr


def test_logs_of_one_task(fleet: Fleet) -> None:
    with Client(fleet.address) as client:  # 2 ranks: 2 tasks, each with its own log
        (job,) = _finished(client, {"algorithm": "emit", "num_workers": 2, "hyperparameters": {"points": 2}})
        all_logs = client.logs(job["id"])
    assert job["state"] == "SUCCEEDED" and {r["task_index"] for r in all_logs} == {0, 1}
    second = cli_json(fleet.controller.cli("logs", job["id"], "--task", "1", "--json"))
    assert second == [r for r in all_logs if r["task_index"] == 1] and second
    first = fleet.controller.cli("logs", job["id"], "--task", "0")
    assert first.returncode == 0 and first.stdout
    assert first.stdout.splitlines() == [f"[0] {r['line']}" for r in all_logs if r["task_index"] == 0]


def _csv(result: Any) -> list[dict[str, str]]:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return list(csv.DictReader(result.stdout.splitlines()))


def test_lists_come_as_csv_with_full_values(fleet: Fleet) -> None:
    """--csv: a header, then one row per item with the values a script needs whole (ids, times, every log line)."""
    with Client(fleet.address) as client:
        (job,) = _finished(client, {"algorithm": "emit", "num_workers": 2, "hyperparameters": {"points": 2}})
        logs = client.logs(job["id"])
    (row,) = [r for r in _csv(fleet.controller.cli("jobs", "--csv")) if r["id"] == job["id"]]
    assert (row["state"], row["tasks.completed"], row["tasks.total"]) == ("SUCCEEDED", "2", "2")
    assert float(row["created_at"]) == job["created_at"] and float(row["progress"]) == 1.0
    listed = cli_json(fleet.controller.cli("agents", "--json"))
    agents = _csv(fleet.controller.cli("agents", "--csv"))
    assert [(a["id"], a["name"], a["state"]) for a in agents] == [(a["id"], a["name"], a["state"]) for a in listed]
    lines = _csv(fleet.controller.cli("logs", job["id"], "--csv"))
    assert [(int(r["task_index"]), r["line"]) for r in lines] == [(r["task_index"], r["line"]) for r in logs]
    assert lines  # each rank logged
    both = fleet.controller.cli("jobs", "--json", "--csv")  # JSON wins, as it always did for `metrics`
    assert job["id"] in {j["id"] for j in cli_json(both)}


def test_models_stats_alias_rm_forced_delete_and_metrics_by_name(fleet: Fleet) -> None:
    spec = {"algorithm": "decision_tree", "dataset": "iris", "model_name": "cli-tree"}
    with Client(fleet.address) as client:  # side by side, each on an agent with a spare worker ready
        local = next(a["id"] for a in client.agents() if a["source"] == "local")
        jobs = _finished(
            client,
            {**spec, "constraints": {"on": [local]}},
            {**spec, "hyperparameters": {"max_depth": 2}, "constraints": {"on": [str(fleet.scripts.info["node_id"])]}},
        )
        assert [j["state"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], [j["error"] for j in jobs]
        versions = client.models(limit=100)["models"]
        all_metrics = client.metrics(jobs[0]["id"])
    trees = [m["metrics"]["test_accuracy"] for m in versions if m["algorithm"] == "decision_tree"]

    accuracy = cli_json(fleet.controller.cli("metrics", jobs[0]["id"], "--name", "test_accuracy", "--json"))
    assert accuracy == [p for p in all_metrics if p["name"] == "test_accuracy"] and accuracy
    assert len({p["name"] for p in all_metrics}) > 2  # so --name really narrowed it
    two = fleet.controller.cli("metrics", jobs[0]["id"], "--name", "test_accuracy", "--name", "f1_macro", "--csv")
    rows = two.stdout.splitlines()
    assert two.returncode == 0 and rows[0] == "task_index,step,name,value,wall_time"
    assert sorted(row.split(",")[2] for row in rows[1:]) == ["f1_macro", "test_accuracy"], rows

    stats = cli_json(fleet.controller.cli("models", "stats", "--json"))
    assert stats["total_models"] == len(versions)
    row = next(r for r in stats["algorithm_stats"] if r["algorithm"] == "decision_tree")
    assert row["count"] == len(trees) and row["best_accuracy"] == pytest.approx(max(trees))
    assert row["avg_accuracy"] == pytest.approx(statistics.mean(trees))
    assert {m["name"] for m in stats["recent_models"]} >= {"cli-tree"}
    table = fleet.controller.cli("models", "stats")
    assert table.returncode == 0 and "decision_tree" in table.stdout
    assert f"{len(versions)} versions in all" in table.stdout

    cli_json(fleet.controller.cli("models", "alias", "set", "cli-tree:1", "production", "--json"))
    removed = cli_json(fleet.controller.cli("models", "alias", "rm", "cli-tree", "production", "--json"))
    assert (removed["name"], removed["version"], removed["aliases"]) == ("cli-tree", 1, [])
    gone = fleet.controller.cli("models", "show", "cli-tree@production")
    assert gone.returncode == 2 and "no such alias" in gone.stderr
    again = fleet.controller.cli("models", "alias", "rm", "cli-tree", "production")
    assert again.returncode == 2 and "no such alias" in again.stderr

    cli_json(fleet.controller.cli("models", "alias", "set", "cli-tree:2", "staging", "--json"))
    refused = fleet.controller.cli("models", "delete", "cli-tree:2")
    assert refused.returncode == 2 and "@staging" in refused.stderr
    forced = cli_json(fleet.controller.cli("models", "delete", "cli-tree:2", "--force", "--json"))
    assert (forced["name"], forced["version"]) == ("cli-tree", 2)
    shown = fleet.controller.cli("models", "show", "cli-tree:2")
    assert shown.returncode == 2 and "no model 'cli-tree:2'" in shown.stderr
    with Client(fleet.address) as client:
        assert client.models(alias="staging")["models"] == []  # the alias went with the version
        assert [m["version"] for m in client.models(name="cli-tree")["models"]] == [1]
        assert client.model_stats()["total_models"] == len(versions) - 1


def test_the_controller_address_comes_from_the_environment(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(fleet.address) as client:
        expected = [j["id"] for j in client.jobs()]
    monkeypatch.setenv("TENSORFLEET_CONTROLLER", fleet.address)
    assert [j["id"] for j in cli_json(tensorfleet("jobs", "--json"))] == expected
    flag_wins = tensorfleet("--controller", DEAD, "jobs")
    assert flag_wins.returncode == 3 and DEAD in flag_wins.stderr
    monkeypatch.setenv("TENSORFLEET_CONTROLLER", DEAD)
    from_env = tensorfleet("jobs")
    assert from_env.returncode == 3 and DEAD in from_env.stderr  # not the default 127.0.0.1:50050


CHECKPOINTS = """
from tensorfleet_agent import task

for step in range(1, 5):
    path = task.checkpoint_dir() / f"ckpt-{step}.bin"
    path.write_bytes(b"step %d" % step)
    task.save_checkpoint(path, step=step)
"""


def test_keep_checkpoints_keeps_the_latest_per_rank(fleet: Fleet) -> None:
    with Client(fleet.address) as client:
        (job,) = _finished(
            client, {"algorithm": "script", "script": {"name": "ckpt.py", "source": CHECKPOINTS}, "max_retries": 0}
        )
    assert job["state"] == "SUCCEEDED", job["error"]
    listed = cli_json(fleet.controller.cli("artifacts", job["id"], "--json"))
    assert sorted(a["step"] for a in listed if a["kind"] == "checkpoint") == [3, 4]  # --keep-checkpoints 2 of 4


def test_an_agent_started_with_no_scripts_never_runs_one(fleet: Fleet) -> None:
    source = "from tensorfleet_agent import task\ntask.report(step=0, ran=1.0)\n"
    spec = {"algorithm": "script", "script": {"name": "one.py", "source": source}, "max_retries": 0}
    with Client(fleet.address) as client:
        by_id = {a["id"]: a for a in client.agents()}
        assert "script" not in by_id[str(fleet.no_scripts.info["node_id"])]["workloads"]
        assert "script" in by_id[str(fleet.scripts.info["node_id"])]["workloads"]
        # both twins have a free slot, and both jobs may only go to "twin": neither may land on the one refusing
        jobs = _finished(client, *({**spec, "constraints": {"on": ["twin"]}} for _ in range(2)))
    assert [j["state"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], [j["error"] for j in jobs]
    assert {t["node_id"] for j in jobs for t in j["task_list"]} == {fleet.scripts.info["node_id"]}
    assert all(j["tasks"]["attempts"] == 1 for j in jobs)  # never refused and retried elsewhere

    async def run_script_there() -> grpc.StatusCode | None:  # a controller that ignores the advertisement
        async with fleet.no_scripts.client() as agent:
            try:
                sha256 = hashlib.sha256(source.encode()).hexdigest()
                inputs = (BlobRef("one.py", sha256),)
                await agent.run_task(TaskSpec("no-scripts-probe", "j", "script", {"script": "one.py"}, inputs=inputs))
            except grpc.aio.AioRpcError as exc:
                assert "--no-scripts" in (exc.details() or "")
                return exc.code()
        return None

    assert asyncio.run(run_script_there()) is grpc.StatusCode.FAILED_PRECONDITION


def test_an_ambiguous_agent_name_is_refused_and_an_id_picks_one_twin(fleet: Fleet) -> None:
    """Last in the module: it drains a twin."""
    ids = [str(a.info["node_id"]) for a in (fleet.no_scripts, fleet.scripts)]
    ambiguous = fleet.controller.cli("agents", "drain", "twin")
    assert ambiguous.returncode == 2 and "matches 2 agents" in ambiguous.stderr
    assert all(node_id in ambiguous.stderr for node_id in ids), ambiguous.stderr
    drained = cli_json(fleet.controller.cli("agents", "drain", ids[0], "--json"))
    assert (drained["id"], drained["name"], drained["state"]) == (ids[0], "twin", "DRAINING")
    with Client(fleet.address) as client:
        states = {a["id"]: a["state"] for a in client.agents()}
    assert (states[ids[0]], states[ids[1]]) == ("DRAINING", "ONLINE")
