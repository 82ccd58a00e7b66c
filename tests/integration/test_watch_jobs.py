"""WatchJobs (the job list as a stream, resumable) and WatchJob (a job's history in batches), through the SDK."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from tensorfleet_desktop.client import TERMINAL, Client

pytestmark = pytest.mark.slow


def _until_final(changes: Any, job_id: str) -> dict[str, Any]:
    """Read changes until the job shows in a final state; the last resume token is in the result."""
    for change in changes:
        for job in change["jobs"]:
            if job["id"] == job_id and job["state"] in TERMINAL:
                return {"job": job, "resume_token": change["resume_token"]}
    raise AssertionError("the stream ended")


def test_watch_jobs_sends_a_snapshot_then_every_end_and_resumes_from_its_token(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        before = client.submit({"algorithm": "noop", "name": "before"})
        assert client.wait(before["id"], timeout=60)["state"] == "SUCCEEDED"

        changes = client.watch_jobs()
        first = next(changes)
        assert first["snapshot"] and [j["id"] for j in first["jobs"]] == [before["id"]]
        fast = client.submit({"algorithm": "noop", "name": "fast"})  # ends between two messages, or nearly
        seen = _until_final(changes, fast["id"])
        assert seen["job"]["state"] == "SUCCEEDED" and seen["job"]["name"] == "fast"
        changes.close()  # disconnected: what happens now is missed, until the resume

        missed = client.submit({"algorithm": "noop", "name": "missed"})
        assert client.wait(missed["id"], timeout=60)["state"] == "SUCCEEDED"
        resumed = next(client.watch_jobs(resume_token=seen["resume_token"]))
        assert not resumed["snapshot"]
        assert [(j["id"], j["state"]) for j in resumed["jobs"]] == [(missed["id"], "SUCCEEDED")]

        stale = next(client.watch_jobs(resume_token="not-a-token-1"))  # e.g. from before a restart
        assert stale["snapshot"] and {j["id"] for j in stale["jobs"]} == {before["id"], fast["id"], missed["id"]}
        only = next(client.watch_jobs([fast["id"][:8]], limit=5))
        assert only["snapshot"] and [j["id"] for j in only["jobs"]] == [fast["id"]]


def test_watch_sends_each_record_once_with_points_and_lines_in_batches(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    controller, _ = cluster
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": 300}})
        assert client.wait(job["id"], timeout=60)["state"] == "SUCCEEDED"
        events = list(client.watch(job["id"]))
    inner = {"metrics": "points", "logs": "lines"}
    seqs = list(
        itertools.chain.from_iterable(
            [r["seq"] for r in e[inner[e["kind"]]]] if e["kind"] in inner else [e["seq"]] for e in events
        )
    )
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing twice, in order
    points = [p for e in events if e["kind"] == "metrics" for p in e["points"]]
    assert [p["step"] for p in points if p["name"] == "value"] == list(range(300))
    assert sum(e["kind"] == "metrics" for e in events) < 300  # stored history replays as batches
    assert events[-1]["kind"] == "job_state" and events[-1]["job"]["state"] == "SUCCEEDED"


def test_watch_jobs_ended_only_sends_each_job_once_in_its_final_state(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    """What Client.wait and wait_all follow: not every state a job passes through, only its end."""
    controller, _ = cluster
    with Client(controller.address) as client:
        done = client.submit({"algorithm": "noop", "name": "ended-before"})
        assert client.wait(done["id"], timeout=60)["state"] == "SUCCEEDED"
        slow = client.submit({"algorithm": "sleep", "hyperparameters": {"seconds": 1.5}, "name": "slow"})
        changes = client.watch_jobs([done["id"], slow["id"]], ended_only=True)
        first = next(changes)
        assert first["snapshot"] and [j["id"] for j in first["jobs"]] == [done["id"]]  # the running one is not sent
        sent = [(j["id"], j["state"]) for change in itertools.islice(changes, 1) for j in change["jobs"]]
        assert sent == [(slow["id"], "SUCCEEDED")]  # QUEUED and RUNNING never went out
        changes.close()
