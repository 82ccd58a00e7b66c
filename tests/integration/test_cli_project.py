"""`tensorfleet submit --project`, `status`, `artifacts` and `agents envs` on a project job, as a user types them:
a real controller and a real agent on loopback, a small project in a git repository made here whose one
requirement comes from a wheelhouse built here (the agent runs with UV_OFFLINE=1 and UV_FIND_LINKS: no index is
ever reached). The command prints a line and writes outputs/result.txt and outputs/plots/curve.csv.

One cluster and one project serve the module; the tests run in file order (the first submit builds the env, the
second is a cache hit with nothing uploaded, the last prunes the env)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import LOOPBACK, ControllerProcess
from helpers.waiting import wait_until
from helpers.wheelhouse import build_wheel, offline_env
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

DEP = "tfcli-dep"  # in the wheelhouse only; no other test's env uses it
BRANCH = "exp/cli"
MAIN_PY = """\
import argparse
import os
from pathlib import Path

import tfcli_dep

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", required=True)
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--attempt-outputs", action="store_true")
args = parser.parse_args()
print(f"project says {args.greeting} with {tfcli_dep.tag()}", flush=True)
out = Path(os.environ.get("TENSORFLEET_OUTPUT_DIR", "outputs"))
(out / "plots").mkdir(parents=True, exist_ok=True)
(out / "result.txt").write_text(f"greeting={args.greeting}\\n")
(out / "plots" / "curve.csv").write_text("step,loss\\n0,1.0\\n1,0.5\\n")
if args.attempt_outputs:  # which attempt wrote it; and a name no table should print as it is
    (out / "attempt.txt").write_text(str(int(os.environ["TORCHELASTIC_RESTART_COUNT"]) + 1))
    (out / "two\\nlines\\x1b[31mred.txt").write_text("x")
raise SystemExit(args.exit)
"""
COMMAND = ["python", "-m", "app.main", "--greeting", "hello there"]  # an option and a space: after `--` as they are


@dataclass
class Fleet:
    controller: ControllerProcess
    agent: AgentProcess
    project: Path
    commit: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # what earlier tests submitted, by role

    def cli(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`tensorfleet --controller ADDRESS ARGS...`, in `cwd` (relative project paths are the user's)."""
        return subprocess.run(
            [sys.executable, "-m", "tensorfleet_desktop", "--controller", self.controller.address, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, "TENSORFLEET_MDNS_INTERFACES": LOOPBACK},
        )

    def json(self, *args: str, cwd: Path | None = None) -> Any:
        done = self.cli(*args, cwd=cwd)
        assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        return json.loads(done.stdout)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def _project(root: Path) -> tuple[Path, str]:
    """A git repository on branch BRANCH: the project committed, then one tracked file changed (a dirty diff)
    and one untracked file added. Returns the folder and its commit."""
    project = root / "myproject"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "main.py").write_text(MAIN_PY)
    (project / "requirements.txt").write_text(f"{DEP}==1.0.0\n")
    (project / "README.md").write_text("a project\n")
    (project / ".gitignore").write_text("outputs/\n*.log\n")
    (project / "run.log").write_text("ignored: never sent\n")
    _git(project, "init", "-q", "-b", BRANCH)
    _git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
    (project / "README.md").write_text("a project\nnow with notes\n")  # tracked, changed: the recorded diff
    (project / "NOTES.txt").write_text("untracked, not ignored: sent\n")
    return project, _git(project, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("cli-project")
    house = root / "house"
    build_wheel(house, root / "build", DEP, code="def tag():\n    return 'tfcli-dep 1.0.0'\n")
    uv = offline_env(house, root / "uv-cache")
    agent = AgentProcess(
        root / "agent", name="cli-box", cpu_slots=2, env={"TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN, **uv}
    )
    controller = ControllerProcess(root / "controller")
    project, commit = _project(root)
    try:
        agent.spawn()
        controller.spawn()
        agent.wait_ready()
        controller.wait_ready()
        with Client(controller.address) as client:
            wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 20, "the agent online")
        yield Fleet(controller, agent, project, commit)
    finally:
        agent.signal_stop()
        controller.stop()
        agent.stop()


def test_submit_project_json_uploads_everything_then_nothing_and_reuses_the_env(fleet: Fleet) -> None:
    cold = fleet.cli("submit", "--project", str(fleet.project), "--wait", "--json", "--", *COMMAND)
    assert cold.returncode == 0, cold.stderr
    first = json.loads(cold.stdout)
    assert first["state"] == "SUCCEEDED", first
    # --wait says when the task prepares (the env build takes a second or more: the job's stream shows it)
    assert "task 0: PREPARING on cli-box: the project's files and environment" in cold.stderr, cold.stderr
    assert "task 0: environment " in cold.stderr and ": built in " in cold.stderr, cold.stderr
    sent = {"README.md", "NOTES.txt", ".gitignore", "requirements.txt", "app/__init__.py", "app/main.py"}
    assert first["upload"] == {
        "files": len(sent),
        "bytes": sum((fleet.project / p).stat().st_size for p in sent),
        "uploaded_files": len(sent),
        "uploaded_bytes": first["upload"]["bytes"],
    }
    assert first["project"]["command"] == COMMAND and first["project"]["files"] == len(sent)
    env = first["environment"]
    assert env["cache_hit"] is False and env["build_seconds"] > 0 and env["source"] == "requirements.txt", env
    assert first["task_list"][0]["environment"] == env and len(env["key"]) > 12

    # `--project` alone is the current folder; an unchanged project uploads nothing and hits the env cache
    second = fleet.json("submit", "--project", "--wait", "--json", "--", *COMMAND, cwd=fleet.project)
    assert second["state"] == "SUCCEEDED", second
    assert second["upload"] == {**first["upload"], "uploaded_files": 0, "uploaded_bytes": 0}
    assert second["project"]["manifest_id"] == first["project"]["manifest_id"]
    assert second["environment"]["cache_hit"] is True and second["environment"]["key"] == env["key"]
    fleet.jobs.update(first=first, second=second)

    logs = fleet.cli("logs", first["id"])
    assert "project says hello there with tfcli-dep 1.0.0" in logs.stdout, logs
    states = [e["state"] for e in fleet.json("watch", first["id"], "--json") if e["kind"] == "task_state"]
    assert "PREPARING" in states and states.index("PREPARING") < states.index("RUNNING"), states


def test_status_shows_the_commit_branch_dirtiness_and_environment(fleet: Fleet) -> None:
    job_id = fleet.jobs["first"]["id"]
    shown = fleet.cli("status", job_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"git: {fleet.commit[:12]} on {BRANCH}, dirty (1 untracked)" in text, text
    assert "project: 6 files" in text and "command: python -m app.main --greeting 'hello there'" in text, text
    env = fleet.jobs["first"]["environment"]
    assert f"environment {env['key'][:12]}: built in " in text and "(requirements.txt, python " in text, text

    status = fleet.json("status", job_id, "--json")
    git = status["project"]["git"]
    assert (git["commit"], git["branch"], git["dirty"], git["untracked"]) == (fleet.commit, BRANCH, True, ["NOTES.txt"])
    assert status["environment"]["key"] == env["key"]

    diff = fleet.cli("status", job_id, "--diff")
    assert diff.returncode == 0 and "+now with notes" in diff.stdout and "README.md" in diff.stdout, diff
    assert "1 untracked file(s) were sent too: NOTES.txt" in diff.stderr


def test_submit_wait_prints_the_upload_the_environment_and_the_result(fleet: Fleet) -> None:
    done = fleet.cli("submit", "--project", str(fleet.project), "--name", "human", "--wait", "--", *COMMAND)
    assert done.returncode == 0, done.stderr
    assert "uploaded 0 of 6 files (0 bytes of " in done.stderr, done.stderr
    assert "task 0: environment " in done.stderr and ": cache hit (requirements.txt" in done.stderr, done.stderr
    assert "SUCCEEDED" in done.stdout and f"git: {fleet.commit[:12]} on {BRANCH}" in done.stdout, done.stdout

    failed = fleet.cli("submit", "--project", str(fleet.project), "--wait", "--", *COMMAND, "--exit", "3")
    assert failed.returncode == 1 and "FAILED" in failed.stdout, (failed.stdout, failed.stderr)
    assert "exited with code 3" in failed.stdout, failed.stdout


def test_a_job_file_project_is_found_relative_to_the_file(fleet: Fleet, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    job_file = jobs / "train.yaml"
    relative = os.path.relpath(fleet.project, jobs)
    job_file.write_text(
        textwrap.dedent(
            f"""\
            name: from-file
            project: {relative}
            command: python -m app.main --greeting 'from a file'
            env: requirements.txt
            max_project_size: 1M
            """
        )
    )
    job = fleet.json("submit", str(job_file), "--json", cwd=tmp_path)  # neither here nor there: the file decides
    assert job["name"] == "from-file" and job["upload"]["uploaded_bytes"] == 0, job
    assert job["project"]["command"] == ["python", "-m", "app.main", "--greeting", "from a file"]
    with Client(fleet.controller.address) as client:
        assert client.wait(job["id"], 120)["state"] == "SUCCEEDED"
        assert any("project says from a file" in row["line"] for row in client.logs(job["id"]))

    too_small = fleet.cli("submit", "--project", str(fleet.project), "--max-project-size", "100", "--", *COMMAND)
    assert too_small.returncode == 2 and "over the limit" in too_small.stderr, too_small.stderr


def test_output_artifacts_are_listed_and_downloaded_by_their_paths(fleet: Fleet, tmp_path: Path) -> None:
    job_id = fleet.jobs["first"]["id"]
    listed = fleet.json("artifacts", job_id, "--json")
    outputs = {a["name"]: a for a in listed if a["kind"] == "output"}
    assert set(outputs) == {"result.txt", "plots/curve.csv"}, listed
    table = fleet.cli("artifacts", job_id)
    assert "plots/curve.csv" in table.stdout and "output" in table.stdout, table.stdout

    got = fleet.json("artifacts", "download", job_id, "plots/curve.csv", "-o", str(tmp_path), "--json")
    assert Path(got["path"]) == tmp_path / "curve.csv"
    assert (tmp_path / "curve.csv").read_text() == "step,loss\n0,1.0\n1,0.5\n"
    here = fleet.cli("artifacts", "download", job_id, "result.txt", cwd=tmp_path)
    assert here.returncode == 0 and (tmp_path / "result.txt").read_text() == "greeting=hello there\n", here.stderr


def test_each_attempts_outputs_are_listed_with_its_number_and_the_latest_is_downloaded(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A failed attempt's outputs are kept, the retry's too: the list says which attempt saved which, a download
    takes the latest attempt's and says so (--attempt N for another), and a name holding a newline and an escape
    sequence is shown escaped, one row, nothing sent to the terminal."""
    command = [*COMMAND, "--exit", "3", "--attempt-outputs"]
    job = fleet.json("submit", "--project", str(fleet.project), "--max-retries", "1", "--json", "--", *command)
    with Client(fleet.controller.address) as client:
        assert client.wait(job["id"], 120)["state"] == "FAILED"
    listed = fleet.json("artifacts", job["id"], "--json")
    assert sorted(a["attempt"] for a in listed if a["name"] == "attempt.txt") == [1, 2], listed
    table = fleet.cli("artifacts", job["id"])
    assert table.returncode == 0 and "ATTEMPT" in table.stdout, table.stderr
    assert "two\\nlines\\x1b[31mred.txt" in table.stdout and "\x1b" not in table.stdout, table.stdout
    rows = [line for line in table.stdout.splitlines() if "attempt.txt" in line]
    assert len(rows) == 2 and all("output" in row for row in rows), table.stdout
    status = fleet.cli("status", job["id"])
    assert "two\\nlines" in status.stdout and "\x1b" not in status.stdout, status.stdout

    latest = fleet.cli("artifacts", "download", job["id"], "attempt.txt", cwd=tmp_path)
    assert latest.returncode == 0, latest.stderr
    assert "of attempt 2 (the latest of attempts 1, 2; --attempt N for another)" in latest.stdout, latest.stdout
    assert (tmp_path / "attempt.txt").read_text() == "2"
    first = fleet.json(
        "artifacts", "download", job["id"], "attempt.txt", "--attempt", "1", "-o", str(tmp_path / "a1"), "--json"
    )
    assert first["attempt"] == 1 and (tmp_path / "a1").read_text() == "1"
    missing = fleet.cli("artifacts", "download", job["id"], "attempt.txt", "--attempt", "3", cwd=tmp_path)
    assert missing.returncode != 0 and "attempts that did: 1, 2" in missing.stderr, missing.stderr


def test_agents_envs_lists_the_env_and_prune_removes_it(fleet: Fleet) -> None:
    key = fleet.jobs["first"]["environment"]["key"]
    listed = fleet.json("agents", "envs", "cli-box", "--json")
    (env,) = [e for e in listed["envs"] if e["key"] == key]
    assert env["source"] == "requirements.txt" and env["jobs"] >= 4 and env["size"] > 0 and env["in_use"] == 0, env
    assert listed["limit_bytes"] == 20 << 30  # the agent's default --env-cache-gb

    table = fleet.cli("agents", "envs", "cli-box")
    assert table.returncode == 0 and key[:12] in table.stdout and "requirements.txt" in table.stdout, table.stdout
    rows = list(csv.DictReader(io.StringIO(fleet.cli("agents", "envs", "cli-box", "--csv").stdout)))
    assert [r["key"] for r in rows if r["key"] == key] == [key]

    kept = fleet.json("agents", "envs", "cli-box", "--prune", "--keep-gb", "1", "--json")
    assert kept == {"removed": [], "freed_bytes": 0}  # it fits in 1 GiB: kept
    pruned = fleet.json("agents", "envs", "cli-box", "--prune", "--json")
    assert key in pruned["removed"] and pruned["freed_bytes"] >= env["size"], pruned
    assert key not in {e["key"] for e in fleet.json("agents", "envs", "cli-box", "--json")["envs"]}
    unknown = fleet.cli("agents", "envs", "no-such-agent")
    assert unknown.returncode == 2 and "no-such-agent" in unknown.stderr, unknown.stderr
