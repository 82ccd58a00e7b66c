"""Issue 24, quotas end to end: a real `tensorfleet serve` with its local agent; `tensorfleet quota set` for this OS
user (tasks=1); of two jobs the second waits, QUEUED, with the quota's reason in `tensorfleet status --json`, until
the first ends (cancelled); `quota list --json` shows the limit beside the user's usage. Over HTTP, a user may read
the quotas but not set them; an admin's token may, and the audit log records it."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from helpers.controller import ControllerProcess, cli_json
from helpers.http_api import as_token
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


def test_a_job_over_the_tasks_quota_waits_with_the_reason_until_room_frees(
    controller_factory: type[ControllerProcess], tmp_path: Path
) -> None:
    controller = controller_factory(
        tmp_path / "ctl", local_agent=True, extra_args=["--local-agent-slots", "2", "--http-port", "0"]
    ).start()
    user = getpass.getuser()
    with Client(controller.address) as client:
        wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 30, "the local agent online")
    assert cli_json(controller.cli("quota", "set", user, "tasks=1", "--json")) == {
        "user": user,
        "gpus": -1,
        "tasks": 1,
        "queued": -1,
    }
    refused = controller.cli("quota", "set", user, "tasks=many")
    assert refused.returncode == 2 and "tasks must be a whole number" in refused.stderr

    first = cli_json(controller.cli("submit", "--algorithm", "sleep", "--param", "seconds=120", "--json"))
    second = cli_json(controller.cli("submit", "--algorithm", "noop", "--json"))

    def status(job_id: str) -> dict[str, Any]:
        return dict(cli_json(controller.cli("status", job_id, "--json")))

    reason = f"over quota: {user} runs 1 of 1 tasks (quota tasks=1)"
    wait_until(lambda: status(second["id"]).get("waiting") == reason, 20, "the second job's quota reason")
    assert status(first["id"])["state"] == "RUNNING" and status(second["id"])["state"] == "QUEUED"
    listed = cli_json(controller.cli("quota", "list", "--json"))
    mine = next(u for u in listed["users"] if u["user"] == user)
    assert (mine["tasks"], mine["running_tasks"], mine["queued_jobs"]) == (1, 1, 1)
    assert listed["half_life_seconds"] == 3600.0

    assert controller.cli("cancel", first["id"]).returncode == 0  # room frees: the second starts
    wait_until(lambda: status(second["id"])["state"] == "SUCCEEDED", 60, "the second job, once the first ended")
    assert status(first["id"])["state"] == "CANCELLED"
    assert status(second["id"]).get("waiting", "") == ""
    usage = next(u for u in cli_json(controller.cli("quota", "list", "--json"))["users"] if u["user"] == user)
    assert usage["usage"] > 0 and usage["share"] == 1.0  # slot-seconds of the sleep, the only user's
    cleared = controller.cli("quota", "clear", user)
    assert cleared.returncode == 0 and f"quota cleared for {user}" in cleared.stdout

    # the HTTP face: everyone reads, only an admin sets (and the audit log says who)
    boss = cli_json(controller.cli("tokens", "create", "boss", "--role", "admin", "--json"))
    dave = cli_json(controller.cli("tokens", "create", "dave", "--json"))
    api = controller.info["http_url"]
    status, problem = as_token(f"{api}/quotas/dave", dave["token"], "PUT", {"tasks": 5})
    assert status == 403, problem
    status, quota = as_token(f"{api}/quotas/dave", boss["token"], "PUT", {"gpus": 2, "queued": 10})
    assert (status, quota) == (200, {"user": "dave", "gpus": 2, "tasks": -1, "queued": 10})
    status, bad = as_token(f"{api}/quotas/dave", boss["token"], "PUT", {"gpus": -5})
    assert status == 422, bad
    status, report = as_token(f"{api}/quotas", dave["token"])
    assert status == 200 and [q["user"] for q in report["quotas"]] == ["dave"]
    assert any(u["user"] == user and u["usage"] > 0 for u in report["usage"])
    entries = cli_json(controller.cli("audit", "--action", "quota_set", "--json"))
    assert {(e["user"], e["target"], e["ok"]) for e in entries} >= {("boss", "dave", True), ("dave", "dave", False)}
