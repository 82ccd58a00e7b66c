"""A user's own training project, end to end (issue 19): a real controller and two real agents on loopback, the
projects of tests/helpers/project_fixtures.py submitted through the SDK (and the CLI once), envs built by uv from
a wheelhouse built here (the agents run with UV_OFFLINE=1 and UV_FIND_LINKS: no index is ever reached).

One cluster serves the module. Tests that need an env cache hit pin their jobs to one agent (constraints.on) and
use a requirements.txt no other test uses, so a hit or a miss is theirs alone."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import project_fixtures as pf
from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.project import ProjectError

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project"
EXAMPLE_IGNORED = {"outputs", "checkpoints", "__pycache__"}  # examples/project/.gitignore, after a run by hand
CANCEL_DEADLINE_S = 2.0 + 3.0  # the agent's 2 s to stop a task, plus margin for a loaded CI machine


class Cluster:
    def __init__(self, controller: ControllerProcess, agents: list[AgentProcess], house: Path, root: Path) -> None:
        self.controller, self.agents, self.house, self.root = controller, agents, house, root
        self.client = Client(controller.address)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("projects")
    house = pf.demo_wheelhouse(root / "wheels")
    agents = [
        AgentProcess(root / f"agent{i}", name=f"agent-{i}", cpu_slots=2, env={
            "TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN, **pf.agent_uv_env(house, root / f"uv-cache{i}")})
        for i in range(2)
    ]  # fmt: skip
    controller = ControllerProcess(root / "controller")
    try:
        for agent in agents:
            agent.spawn()
        controller.spawn()
        for agent in agents:
            agent.wait_ready()
        controller.wait_ready()
        cluster = Cluster(controller, agents, house, root)
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in cluster.client.agents()) == 2, 20, "2 agents")
        yield cluster
        cluster.client.close()
    finally:
        for agent in agents:
            agent.signal_stop()
        controller.stop()
        for agent in agents:
            agent.stop()


def _project(cluster: Cluster, name: str, **kwargs: Any) -> Path:
    return pf.trainer_project(cluster.root / name, **kwargs)


def _logs(client: Client, job_id: str) -> list[str]:
    return [row["line"] for row in client.logs(job_id)]


def _wait_ok(client: Client, job: dict[str, Any], timeout: float = 90) -> dict[str, Any]:
    done = client.wait(job["id"], timeout)
    assert done["state"] == "SUCCEEDED", (done["error"], _logs(client, job["id"])[-30:])
    return client.job(job["id"])


def _outputs(client: Client, job_id: str) -> dict[str, dict[str, Any]]:
    return {(a["name"]): a for a in client.artifacts(job_id) if a["kind"] == "output"}


def _pinned(agent: str) -> dict[str, Any]:
    return {"constraints": {"on": [agent]}}


# ---------------------------------------------------------------- runs


def test_a_multi_module_project_builds_its_env_then_reruns_from_the_cache_and_uploads_only_what_changed(
    cluster: Cluster, tmp_path: Path
) -> None:
    client = cluster.client
    project = _project(cluster, "cached", requirements=f"{pf.UTIL_NAME}=={pf.UTIL_VERSION}  # cache test\n")
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())

    first = client.submit_project(project, pf.TRAIN_COMMAND, name="cold", **_pinned("agent-0"))
    assert first["upload"]["files"] == len(files)
    assert first["upload"]["uploaded_bytes"] == first["upload"]["bytes"] > 0  # a new controller stores nothing yet
    cold = _wait_ok(client, first)
    (task,) = cold["task_list"]
    assert task["environment"]["cache_hit"] is False and task["environment"]["build_seconds"] > 0, task
    lines = _logs(client, first["id"])
    assert any("Installed 1 package" in line for line in lines), lines  # uv's build log streamed as task logs
    assert any(line.startswith("tfdemo_util 1.0.0 model v1") for line in lines), lines  # the local wheel
    assert cold["metrics"]["loss"] < 1.0 and "scaled" in cold["metrics"]
    outputs = _outputs(client, first["id"])
    assert set(outputs) == {"result.json", "plots/curve.csv"}, outputs
    got = client.download_artifact(first["id"], "result.json", tmp_path)
    assert json.loads(Path(got["path"]).read_text())["model"] == "v1"

    again = client.submit_project(project, pf.TRAIN_COMMAND, name="warm", **_pinned("agent-0"))
    assert again["upload"]["uploaded_bytes"] == 0 and again["upload"]["uploaded_files"] == 0
    assert again["upload"]["files"] == len(files)
    warm = _wait_ok(client, again)
    assert warm["task_list"][0]["environment"]["cache_hit"] is True
    assert warm["task_list"][0]["environment"]["key"] == task["environment"]["key"]
    assert not any("Installed" in line for line in _logs(client, again["id"]))  # no uv run at all

    model = project / "trainer" / "model.py"
    model.write_text(model.read_text().replace('MODEL_VERSION = "v1"', 'MODEL_VERSION = "v2"'))
    changed = client.submit_project(project, pf.TRAIN_COMMAND, name="changed", **_pinned("agent-0"))
    assert changed["upload"]["uploaded_files"] == 1, changed["upload"]
    assert changed["upload"]["uploaded_bytes"] == model.stat().st_size  # that one file, nothing else
    done = _wait_ok(client, changed)
    assert done["task_list"][0]["environment"]["cache_hit"] is True  # code changes never rebuild the env
    assert any(line.startswith("tfdemo_util 1.0.0 model v2") for line in _logs(client, changed["id"]))


def test_the_task_is_preparing_while_its_env_is_built(cluster: Cluster) -> None:
    client = cluster.client
    project = _project(cluster, "states", requirements=f"{pf.UTIL_NAME}>=1  # states test\n")
    job = client.submit_project(project, pf.TRAIN_COMMAND)
    states = [
        e["state"] for e in client.watch(job["id"]) if e["kind"] == "task_state" and e["task_index"] == 0
    ]  # the watch ends with the job
    assert "PREPARING" in states and "RUNNING" in states, states
    assert states.index("PREPARING") < states.index("RUNNING"), states
    assert client.job(job["id"])["state"] == "SUCCEEDED"


def test_a_uv_lock_project_is_synced_from_its_lock(cluster: Cluster) -> None:
    client = cluster.client
    project = pf.uv_lock_project(cluster.root / "locked", cluster.house, cluster.root / "lock-cache")
    job = client.submit_project(project, pf.TRAIN_COMMAND)
    done = _wait_ok(client, job)
    assert done["task_list"][0]["environment"]["source"] == "uv.lock", done["task_list"][0]
    lines = _logs(client, job["id"])
    assert any(line.startswith("$ uv sync --frozen") for line in lines), lines
    assert any(line.startswith("tfdemo_util 1.0.0") for line in lines), lines


def test_a_two_rank_torch_project_meets_over_gloo(cluster: Cluster) -> None:
    client = cluster.client
    project = pf.ddp_project(cluster.root / "ddp")
    job = client.submit_project(project, ["python", "-m", "ddp.allreduce"], num_workers=2, max_retries=0)
    done = _wait_ok(client, job, timeout=150)
    ranks = done["task_list"]
    assert [t["metrics"]["total"] for t in ranks] == [3.0, 3.0], ranks
    assert [t["metrics"]["world"] for t in ranks] == [2.0, 2.0]
    lines = _logs(client, job["id"])
    assert any("reusing the agent's torch" in line for line in lines), lines  # never a second torch
    outputs = sorted((a["name"], a["task_index"]) for a in client.artifacts(job["id"]) if a["kind"] == "output")
    assert outputs == [("rank0.json", 0), ("rank1.json", 1)]


def test_the_example_project_runs_as_the_readme_says(cluster: Cluster, tmp_path: Path) -> None:
    """examples/project with the README's command (fewer epochs): its env links the agent's torch, its outputs
    and checkpoints come back."""
    client = cluster.client
    command = ["python", "-m", "spirals.train", "--config", "configs/default.json", "--epochs", "10"]
    job = client.submit_project(EXAMPLE, command, max_retries=0)
    sent = [p for p in EXAMPLE.rglob("*") if p.is_file() and not EXAMPLE_IGNORED & set(p.relative_to(EXAMPLE).parts)]
    assert job["upload"]["files"] == len(sent), (job["upload"], sent)
    done = _wait_ok(client, job, timeout=150)
    assert done["metrics"]["test_accuracy"] > 0.8, done["metrics"]
    assert done["task_list"][0]["environment"]["source"] == "requirements.txt"
    kinds = {(a["name"], a["kind"]) for a in client.artifacts(job["id"])}
    assert {("model.pt", "output"), ("metrics.json", "output"), ("loss_curve.csv", "output")} <= kinds, kinds
    assert ("last.pt", "checkpoint") in kinds, kinds
    got = client.download_artifact(job["id"], "metrics.json", tmp_path)
    assert json.loads(Path(got["path"]).read_text())["epochs"] == 10


# ---------------------------------------------------------------- what goes wrong, said clearly


def test_a_requirement_uv_cannot_resolve_fails_the_job_once_with_uvs_reason(cluster: Cluster) -> None:
    client = cluster.client
    project = pf.failing_requirement_project(cluster.root / "bad")
    job = client.submit_project(project, pf.TRAIN_COMMAND)  # default retries: still tried only once
    done = client.wait(job["id"], 60)
    assert done["state"] == "FAILED"
    assert done["finished_at"] - done["created_at"] < 20  # within seconds, not after a retry on every agent
    detail = client.job(job["id"])
    assert detail["tasks"]["attempts"] == 1, detail["tasks"]
    assert [t["exit_cause"] for t in detail["task_list"]] == ["env_build"]
    assert pf.MISSING_PACKAGE in detail["error"] and "requirements.txt" in detail["error"], detail["error"]
    assert "No solution found" in detail["error"] or "not found" in detail["error"], detail["error"]


def test_a_failing_command_says_its_exit_code_and_keeps_its_outputs(cluster: Cluster, tmp_path: Path) -> None:
    client = cluster.client
    project = _project(cluster, "failing")
    job = client.submit_project(project, [*pf.TRAIN_COMMAND, "--exit-code", "3"], max_retries=0)
    done = client.wait(job["id"], 60)
    assert done["state"] == "FAILED"
    assert "python -m trainer.train" in done["error"] and "exited with code 3" in done["error"], done["error"]
    assert set(_outputs(client, job["id"])) == {"result.json", "plots/curve.csv"}  # written before the failure
    got = client.download_artifact(job["id"], "result.json", tmp_path)
    assert json.loads(Path(got["path"]).read_text())["model"] == "v1"


def test_a_large_ignored_file_is_not_sent(cluster: Cluster) -> None:
    client = cluster.client
    project = _project(cluster, "large", requirements=None)
    pf.add_large_ignored_file(project)  # 300 MiB: over the 200 MiB limit, but .gitignore'd
    check = "import os; print('huge there:', os.path.exists('data/huge.bin'))"
    job = client.submit_project(project, ["python", "-c", check], env="none")
    assert job["upload"]["bytes"] < 64 * 1024, job["upload"]
    _wait_ok(client, job)
    assert "huge there: False" in _logs(client, job["id"])


def test_a_symlink_leaving_the_project_is_refused_at_submit(cluster: Cluster) -> None:
    client = cluster.client
    project = _project(cluster, "escape")
    pf.add_escaping_symlink(project)
    before = len(client.jobs())
    with pytest.raises(ProjectError) as caught:
        client.submit_project(project, pf.TRAIN_COMMAND)
    assert "configs/secrets.json" in str(caught.value) and "leave" in str(caught.value), caught.value
    out = cluster.controller.cli("submit", "--project", str(project), "--", *pf.TRAIN_COMMAND)
    assert out.returncode != 0 and "configs/secrets.json" in out.stderr, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(client.jobs()) == before  # nothing was submitted


def test_the_cli_submits_a_project_and_reports_the_upload(cluster: Cluster) -> None:
    project = _project(cluster, "cli")
    out = cluster.controller.cli(
        "submit", "--project", str(project), "--wait", "--json", "--", *pf.TRAIN_COMMAND,
        "--lr", "0.1", timeout=120,
    )  # fmt: skip
    job = cli_json(out)
    assert job["state"] == "SUCCEEDED", job
    assert job["upload"]["files"] == 8 and 0 <= job["upload"]["uploaded_bytes"] <= job["upload"]["bytes"], job
    assert job["environment"]["source"] == "requirements.txt", job  # status --json: rank 0's environment
    listed = cluster.controller.cli("artifacts", job["id"])
    assert listed.returncode == 0 and "result.json" in listed.stdout, listed


# ---------------------------------------------------------------- cancel


def test_cancel_while_preparing_stops_uv_at_once(cluster: Cluster) -> None:
    client = cluster.client
    pidfile = cluster.root / "slow-backend.pid"
    requirement = pf.add_slow_sdist(cluster.house, pidfile)
    project = _project(cluster, "slow", requirements=f"{requirement}\n")
    job = client.submit_project(project, pf.TRAIN_COMMAND)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, "the slow build backend to start")
    backend = int(pidfile.read_text())
    assert client.job(job["id"])["task_list"][0]["state"] == "PREPARING"
    asked = time.time()
    client.cancel(job["id"])
    done = client.wait(job["id"], 30)
    assert done["state"] == "CANCELLED"
    assert done["finished_at"] - asked < CANCEL_DEADLINE_S, done["finished_at"] - asked
    wait_until(lambda: not _alive(backend), CANCEL_DEADLINE_S, "uv's build backend to be killed")


def test_cancel_while_running_keeps_the_outputs_written_so_far(cluster: Cluster) -> None:
    client = cluster.client
    project = _project(cluster, "long")
    job = client.submit_project(project, [*pf.TRAIN_COMMAND, "--sleep", "300"])
    wait_until(lambda: any(line.startswith("sleeping") for line in _logs(client, job["id"])), 60, "the sleep")
    asked = time.time()
    client.cancel(job["id"])
    done = client.wait(job["id"], 30)
    assert done["state"] == "CANCELLED"
    assert done["finished_at"] - asked < CANCEL_DEADLINE_S, done["finished_at"] - asked
    wanted = {"result.json", "plots/curve.csv"}
    wait_until(lambda: set(_outputs(client, job["id"])) == wanted, 10, "the outputs of the cancelled task")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too (its parent, uv, is gone or has not reaped it yet)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
