"""Issue 24, identity end to end: a real `tensorfleet serve`, named tokens made and used through the CLI. A user
submits and controls only their own jobs, a viewer only reads, an admin may do anything; every refusal names the
role or the job's owner, and `tensorfleet audit` lists who did what, refusals included."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.controller import ControllerProcess, cli_json
from helpers.http_api import as_token
from tensorfleet_desktop.client import AsyncClient, TensorFleetError

pytestmark = pytest.mark.slow


def _as(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    """The CLI's next commands run with this token (None: the controller's own, from its connection file)."""
    if token is None:
        monkeypatch.delenv("TENSORFLEET_CONTROLLER_TOKEN", raising=False)
    else:
        monkeypatch.setenv("TENSORFLEET_CONTROLLER_TOKEN", token)


def test_roles_ownership_and_the_audit_log_through_the_cli(
    controller_factory: type[ControllerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = controller_factory(tmp_path / "ctl", extra_args=["--http-port", "0"]).start()
    submit = ("submit", "--algorithm", "noop", "--json")  # no agent: the jobs stay queued

    _as(monkeypatch, None)  # the controller's own client token: an admin
    alice = cli_json(controller.cli("tokens", "create", "alice", "--json"))
    bob = cli_json(controller.cli("tokens", "create", "bob", "--role", "viewer", "--json"))
    carol = cli_json(controller.cli("tokens", "create", "carol", "--role", "user", "--json"))
    assert (alice["role"], bob["role"], alice["token"].startswith("tft1_")) == ("user", "viewer", True)
    again = controller.cli("tokens", "create", "alice")
    assert again.returncode == 2 and "a token named alice exists" in again.stderr
    listed = cli_json(controller.cli("tokens", "list", "--json"))
    assert sorted(t["name"] for t in listed) == ["alice", "bob", "carol"]
    assert all("token" not in t and "hash" not in t for t in listed)
    assert alice["token"] not in (tmp_path / "ctl.log").read_text()  # never logged

    _as(monkeypatch, alice["token"])
    assert cli_json(controller.cli("whoami", "--json")) == {"name": "alice", "role": "user", "named_token": True}
    job = cli_json(controller.cli(*submit))
    assert job["submitter"] == "alice"  # the token's name, not the OS user the client sends
    refused = controller.cli("tokens", "list")
    assert refused.returncode == 2 and "user alice (user) may not list tokens" in refused.stderr

    _as(monkeypatch, bob["token"])
    viewer_submit = controller.cli(*submit)
    assert viewer_submit.returncode == 2 and "user bob (viewer) may not submit jobs" in viewer_submit.stderr
    viewer_cancel = controller.cli("cancel", job["id"])
    assert viewer_cancel.returncode == 2 and "user bob (viewer) may not cancel jobs" in viewer_cancel.stderr
    assert [j["id"] for j in cli_json(controller.cli("jobs", "--json"))] == [job["id"]]  # a viewer reads

    _as(monkeypatch, carol["token"])
    other = controller.cli("cancel", job["id"])
    assert other.returncode == 2
    assert f"job {job['id'][:8]} belongs to alice: only alice or an admin may cancel it" in other.stderr
    assert cli_json(controller.cli("jobs", "--mine", "--json")) == []

    _as(monkeypatch, alice["token"])
    assert [j["id"] for j in cli_json(controller.cli("jobs", "--mine", "--json"))] == [job["id"]]
    mine = cli_json(controller.cli("audit", "--json"))  # a user reads their own entries only
    assert {e["user"] for e in mine} == {"alice"}

    _as(monkeypatch, None)
    cancelled = controller.cli("cancel", job["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert [j["id"] for j in cli_json(controller.cli("jobs", "--user", "alice", "--json"))] == [job["id"]]
    revoked = cli_json(controller.cli("tokens", "revoke", "bob", "--json"))
    assert revoked["revoked"] is True

    entries = cli_json(controller.cli("audit", "--json"))
    seen = [(e["user"], e["role"], e["action"], e["ok"]) for e in reversed(entries)]
    admin = next(e["user"] for e in entries if e["action"] == "token_create")
    assert seen == [
        (admin, "admin", "token_create", True),
        (admin, "admin", "token_create", True),
        (admin, "admin", "token_create", True),
        (admin, "admin", "token_create", False),  # a second live token for alice
        ("alice", "user", "submit", True),
        ("bob", "viewer", "submit", False),
        ("bob", "viewer", "cancel", False),
        ("carol", "user", "cancel", False),
        (admin, "admin", "cancel", True),
        (admin, "admin", "token_revoke", True),
    ]
    assert [e["seq"] for e in reversed(entries)] == list(range(1, len(entries) + 1))
    assert {e["target"] for e in entries if e["action"] == "cancel"} == {job["id"]}  # refusals name it too
    assert [e["target"] for e in entries if e["action"] == "submit"] == ["", job["id"]]  # a refused one made none
    duplicate = next(e for e in entries if e["action"] == "token_create" and not e["ok"])
    assert duplicate["target"] == "alice" and "a token named alice exists" in duplicate["detail"]
    refusals = cli_json(controller.cli("audit", "--action", "cancel", "--user", "carol", "--json"))
    assert [e["detail"] for e in refusals] == [other.stderr.split("refused: ", 1)[1].strip()]
    table = controller.cli("audit", "--since", "1h")
    assert table.returncode == 0 and "refused" in table.stdout

    _as(monkeypatch, bob["token"])
    gone = controller.cli("jobs")
    assert gone.returncode == 2 and "was revoked" in gone.stderr

    # the HTTP face: the same tokens, the same table, the same audit log
    api = controller.info["http_url"]
    assert as_token(f"{api}/jobs", bob["token"])[0] == 401
    status, problem = as_token(f"{api}/jobs/{job['id']}/retry", carol["token"], "POST")
    assert status == 403 and "belongs to alice" in problem["detail"]
    status, made = as_token(f"{api}/jobs", alice["token"], "POST", {"algorithm": "noop"})
    assert status == 201 and made["submitter"] == "alice", made
    status, problem = as_token(f"{api}/tokens", alice["token"])
    assert status == 403 and "user alice (user) may not list tokens" in problem["detail"]
    assert as_token(f"{api}/whoami", alice["token"]) == (200, {"name": "alice", "role": "user", "named_token": True})
    status, http_entries = as_token(f"{api}/audit?action=submit", alice["token"])
    assert status == 200 and [e["ok"] for e in http_entries["entries"]] == [True, True]


def test_resubmitting_a_colleagues_job_and_owned_dataset_names(
    controller_factory: type[ControllerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 review (findings 8, 10): a user resubmits a colleague's job as a job of their own, through both
    faces; a dataset name is its first uploader's, and another user's version is refused naming them, audited."""
    controller = controller_factory(tmp_path / "ctl", extra_args=["--http-port", "0"]).start()
    _as(monkeypatch, None)
    alice = cli_json(controller.cli("tokens", "create", "alice", "--json"))
    carol = cli_json(controller.cli("tokens", "create", "carol", "--json"))
    reserved = controller.cli("tokens", "create", "unknown")
    assert reserved.returncode == 2 and "'unknown' is reserved" in reserved.stderr

    _as(monkeypatch, alice["token"])
    job = cli_json(controller.cli("submit", "--algorithm", "noop", "--json"))
    table = tmp_path / "iris.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i * 3},{i % 2}\n" for i in range(12)))
    made = controller.cli("datasets", "upload", str(table), "--name", "shared", "--json")
    assert made.returncode == 0, made.stderr

    _as(monkeypatch, carol["token"])
    copy = cli_json(controller.cli("resubmit", job["id"], "--json"))
    assert (copy["submitter"], copy["id"] != job["id"]) == ("carol", True)  # hers; alice's job is untouched
    table.write_text("a,b,label\n" + "".join(f"{i},{i * 5},{i % 2}\n" for i in range(12)))
    theirs = controller.cli("datasets", "upload", str(table), "--name", "shared")
    assert theirs.returncode == 2
    assert "dataset shared belongs to alice: only alice or an admin may add versions to it" in theirs.stderr

    api = controller.info["http_url"]
    status, again = as_token(f"{api}/jobs/{job['id']}/resubmit", carol["token"], "POST", {})
    assert status == 201 and again["submitter"] == "carol", again
    status, problem = as_token(
        f"{api}/datasets/shared/references", carol["token"], "POST", {"url": f"file://{tmp_path}"}
    )
    assert status == 403 and "dataset shared belongs to alice" in problem["detail"], problem

    _as(monkeypatch, None)
    refused = cli_json(controller.cli("audit", "--user", "carol", "--json"))
    assert [(e["action"], e["ok"]) for e in reversed(refused)] == [
        ("resubmit", True),
        ("dataset_commit", False),  # the CLI uploads what the controller lacks, then commits
        ("resubmit", True),
        ("dataset_reference", False),
    ]


async def test_revoking_a_token_ends_the_watch_it_holds_open_at_once(
    controller_factory: type[ControllerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch of a quiet cluster sends nothing for hours: revoking its token must end it then, not at its next
    change (gRPC's WatchJobs, and the HTTP API's event stream of a job)."""
    controller = controller_factory(tmp_path / "ctl", extra_args=["--http-port", "0"]).start()
    _as(monkeypatch, None)
    dave = cli_json(controller.cli("tokens", "create", "dave", "--role", "viewer", "--json"))
    job = cli_json(controller.cli("submit", "--algorithm", "noop", "--json"))  # no agent: it stays queued
    events = urllib.request.Request(
        f"{controller.info['http_url']}/jobs/{job['id']}/events", headers={"Authorization": f"Bearer {dave['token']}"}
    )
    sse = await asyncio.to_thread(urllib.request.urlopen, events, timeout=10)
    _as(monkeypatch, dave["token"])
    async with AsyncClient(controller.address) as client:
        stream = client.watch_jobs()
        assert (await anext(stream))["snapshot"] is True
        _as(monkeypatch, None)
        revoke = await asyncio.to_thread(controller.cli, "tokens", "revoke", "dave")
        assert revoke.returncode == 0, revoke.stderr
        with pytest.raises(TensorFleetError, match="the token of dave was revoked"):
            await asyncio.wait_for(anext(stream), 5.0)
    with sse:
        rest = await asyncio.wait_for(asyncio.to_thread(sse.read), 5.0)  # returns once the stream has ended
    assert b"submitted" in rest or b"QUEUED" in rest  # what it had sent before it ended
