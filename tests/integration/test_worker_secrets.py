"""Secrets never reach user code: a job cannot read the fleet's pairing token, the controller token or the
controller's S3 keys from its environment, so no form of them (plain, reversed, base64) can end up in its logs, the
stored events or the agent's journal; serve's local agent does not hold them (nor its join token) in
/proc/PID/environ; and the journals and data dirs are private to the user running the daemons."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from helpers.agents import CLUSTER_TOKEN, AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

CONTROLLER_TOKEN = "tfc-agent-shell-leftover-0123456789"
JOIN_TOKEN = "tfj-agent-join-token-0123456789"
AWS_KEY_ID = "AKIATENSORFLEETTEST01"
AWS_SECRET = "tf-aws-secret-access-key-0123456789abcdef"
AWS_SESSION = "tf-aws-session-token-0123456789abcdef"
SECRETS = (CLUSTER_TOKEN, CONTROLLER_TOKEN, JOIN_TOKEN, AWS_KEY_ID, AWS_SECRET, AWS_SESSION)

LEAKY_SCRIPT = """
import base64, json, os
names = ["TENSORFLEET_CLUSTER_TOKEN", "TENSORFLEET_CONTROLLER_TOKEN", "TENSORFLEET_JOIN_TOKEN",
         "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
for name in names:
    value = os.environ.get(name, "")
    print(name, value[::-1], base64.b64encode(value.encode()).decode(), sep=" | ")
print("ENVIRONMENT", json.dumps(dict(os.environ)))
print("SCRIPT RAN", len(os.environ))
"""


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, raw[::-1], base64.b64encode(raw), base64.b64encode(raw).rstrip(b"=")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_script_job_sees_no_secret_and_journals_are_private(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> None:
    agent_dir, controller_dir = tmp_path / "agent", tmp_path / "controller"
    for old in (agent_dir / "tasks", controller_dir):  # made by an older version, readable by everyone
        old.mkdir(parents=True, mode=0o755)
        old.chmod(0o755)
    agent_dir.chmod(0o755)
    env = {
        "TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN,
        "TENSORFLEET_CONTROLLER_TOKEN": CONTROLLER_TOKEN,
        "TENSORFLEET_JOIN_TOKEN": JOIN_TOKEN,
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_SESSION_TOKEN": AWS_SESSION,
    }
    agent = agent_factory(agent_dir, name="secret-agent", cpu_slots=1, env=env).start()
    # serve with the same secrets in its environment, and its own local agent
    controller = controller_factory(
        controller_dir, ["--no-mdns", "--agent", agent.address, "--local-agent-slots", "1"], local_agent=True, env=env
    ).start()
    with Client(controller.address) as client:  # paired by the cluster token the agent was started with
        wait_until(lambda: [a["state"] for a in client.agents()] == ["ONLINE"] * 2, 30, "pairing")
        assert all(a["paired"] for a in client.agents())
        local = next(a["name"] for a in client.agents() if a["name"] != "secret-agent")
    script = tmp_path / "leak.py"
    script.write_text(LEAKY_SCRIPT)
    logs = ""
    for where in ("secret-agent", local):  # an agent started with the secrets, and serve's local agent
        job = cli_json(
            controller.cli("submit", "--script", str(script), "--on", where, "--max-retries", "0", "--wait", "--json")
        )
        assert job["state"] == "SUCCEEDED", job
        with Client(controller.address) as client:
            assert client.job(job["id"])["task_list"][0]["agent"] == where
            job_logs = "\n".join(r["line"] for r in client.logs(job["id"]))
        assert "SCRIPT RAN" in job_logs and "ENVIRONMENT" in job_logs, job_logs
        assert "AWS_SECRET_ACCESS_KEY | " in job_logs  # the script looked, and found nothing
        logs += job_logs
    stored = [p for p in controller_dir.glob("tensorfleet.db*") if p.is_file()]
    journals = sorted((agent_dir / "tasks").glob("*/events.pb"))
    local_journals = sorted((controller_dir / "local-agent" / "tasks").glob("*/events.pb"))
    local_pid = int(json.loads((controller_dir / "local-agent" / "lock").read_text())["pid"])
    local_environ = Path(f"/proc/{local_pid}/environ").read_bytes()
    assert stored and journals and local_journals
    for secret in SECRETS:
        for form in _forms(secret):
            assert form.decode() not in logs, f"a form of {secret[:8]}… reached the job's logs"
            for path in (*stored, *journals, *local_journals, agent.log_path):
                assert form not in path.read_bytes(), f"a form of {secret[:8]}… is in {path}"
        assert secret.encode() not in local_environ, f"{secret[:8]}… is in the local agent's environment"
    local_join = b"TENSORFLEET_JOIN_TOKEN=" in local_environ or b"tfj-" in local_environ
    assert not local_join, "serve's local agent keeps its join token in /proc/PID/environ"

    assert _mode(agent_dir) == 0o700 and _mode(agent_dir / "tasks") == 0o700 and _mode(controller_dir) == 0o700
    for journal in journals:
        assert _mode(journal) == 0o600 and _mode(journal.parent) == 0o700  # the spec is in the journal file
