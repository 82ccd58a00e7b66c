"""A job's live events, metrics and logs over HTTP, against a running controller and two agents: the SSE stream a
dashboard follows to the end and resumes after a dropped connection (no gap, no duplicate), the history alone,
metrics as JSON and CSV equal to what `tensorfleet metrics` prints, logs (followed too), and the refusals."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from helpers.controller import ControllerProcess, cli_json
from helpers.http_api import HttpApi, SseEvent

pytestmark = pytest.mark.slow

Cluster = tuple[ControllerProcess, list[Any]]
SEED = {"name": "wine-logistic-regression", "algorithm": "logistic_regression", "dataset": "wine"}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def _submit(controller: ControllerProcess, *args: str) -> str:
    job: dict[str, Any] = cli_json(controller.cli("submit", *args, "--json"))
    return str(job["id"])


def _seed(controller: ControllerProcess) -> str:
    return _submit(controller, "--name", SEED["name"], "--algorithm", SEED["algorithm"], "--dataset", SEED["dataset"])


def _emitter(controller: ControllerProcess, points: int = 30, rate: float = 20.0) -> str:
    """A job that reports a `gauge` point every 1/rate s: still running when a client drops its stream."""
    return _submit(
        controller, "--algorithm", "emit", "-p", f"points={points}", "-p", f"rate={rate}", "-p", "name=gauge"
    )


def _until_end(events: Iterator[SseEvent]) -> list[SseEvent]:
    """Every event up to and including `end` (the server closes the stream after it)."""
    seen = []
    for event in events:
        seen.append(event)
        if event.event == "end":
            break
    return seen


def _seqs(events: list[SseEvent]) -> list[int]:
    """The sequence numbers of the stored events (`end` has no id); each id is its data's seq."""
    stored = [e for e in events if e.event not in ("end", "error")]
    for e in stored:
        assert e.id == str(e.json()["seq"]), e
    return [int(e.id) for e in stored]


def _history(api: HttpApi, job_id: str) -> list[SseEvent]:
    response, events = api.events(f"jobs/{job_id}/events", follow="false")
    assert response.status_code == 200, response.text
    return list(events)  # the server ends it


@pytest.fixture(scope="module")
def api(http_cluster: Cluster) -> HttpApi:
    return HttpApi.of(http_cluster[0])


@pytest.fixture(scope="module")
def seed(http_cluster: Cluster) -> str:
    """The seed job's id, submitted once for the module as its first test starts (it runs on one agent while the
    `emit` jobs run on the other), followed to its end, its metrics read."""
    return _seed(http_cluster[0])


def _finished(api: HttpApi, job_id: str) -> None:
    response, stream = api.events(f"jobs/{job_id}/events")
    assert _until_end(stream)[-1].json()["state"] == "SUCCEEDED"
    response.close()


def test_reconnect_mid_stream_loses_nothing_and_repeats_nothing(http_cluster: Cluster, api: HttpApi, seed: str) -> None:
    controller, _ = http_cluster
    job_id = _emitter(controller)
    response, stream = api.events(f"jobs/{job_id}/events")
    first = []
    for event in stream:  # drop the connection at the third metric point, the job still running
        first.append(event)
        if sum(e.event == "metric" for e in first) == 3:
            break
    response.close()
    assert not TERMINAL & {e.json()["state"] for e in first if e.event == "state"}  # dropped while it ran
    last_id = first[-1].id
    response, stream = api.events(f"jobs/{job_id}/events", last_event_id=last_id, after="0")  # the header wins
    second = _until_end(stream)
    response.close()
    assert second[-1].event == "end" and second[-1].json()["state"] == "SUCCEEDED"
    together = _seqs(first) + _seqs(second)
    assert int(last_id) < _seqs(second)[0]
    history = _history(api, job_id)
    assert together == _seqs(history), "a gap or a duplicate"
    assert together == sorted(set(together))
    gauge = [e.json() for e in first + second if e.event == "metric"]
    assert [(p["step"], p["value"]) for p in gauge] == [(i, float(i)) for i in range(30)]

    # `after` for clients that cannot set headers: the same continuation
    response, stream = api.events(f"jobs/{job_id}/events", after=last_id)
    assert _seqs(_until_end(stream)) == _seqs(second)
    response.close()


def test_follow_false_ends_by_itself_and_a_cancel_ends_the_live_stream(http_cluster: Cluster, api: HttpApi) -> None:
    controller, _ = http_cluster
    job_id = _emitter(controller, points=10_000, rate=20)  # runs until cancelled
    response, live = api.events(f"jobs/{job_id}/events")
    assert next(e for e in live if e.event == "metric").json()["step"] == 0
    history = _history(api, job_id)  # the stored events, without waiting for the job
    assert history[-1].event == "end" and history[-1].json()["state"] == "RUNNING"
    seqs = _seqs(history)
    assert seqs == sorted(set(seqs)) and history[-1].json()["last_seq"] == seqs[-1]
    assert _seqs(_history(api, job_id))[: len(seqs)] == seqs  # a prefix of what comes later

    assert controller.cli("cancel", job_id).returncode == 0
    rest = _until_end(live)
    response.close()
    assert rest[-1].json()["state"] == "CANCELLED"
    assert rest[-2].event == "state" and rest[-2].json()["state"] == "CANCELLED"


def test_logs_as_json_csv_and_followed(http_cluster: Cluster, api: HttpApi) -> None:
    controller, _ = http_cluster
    job_id = _emitter(controller, points=10, rate=20)
    response, stream = api.events(f"jobs/{job_id}/logs", follow="true")  # from the start, until the job ends
    followed = _until_end(stream)
    response.close()
    assert followed[-1].event == "end" and followed[-1].json()["state"] == "SUCCEEDED"
    assert {e.event for e in followed[:-1]} == {"log"}

    lines = api.ok("GET", f"jobs/{job_id}/logs")["lines"]
    assert lines == cli_json(controller.cli("logs", job_id, "--json"))
    assert lines and [(e.json()["seq"], e.json()["line"], e.json()["stream"]) for e in followed[:-1]] == [
        (line["seq"], line["line"], line["stream"]) for line in lines
    ]
    assert api.ok("GET", f"jobs/{job_id}/logs", params={"task": 0})["lines"] == lines
    rows = list(csv.DictReader(io.StringIO(api.get(f"jobs/{job_id}/logs", params={"format": "csv"}).text)))
    assert [r["line"] for r in rows] == [line["line"] for line in lines]
    # resumed after the first line: the rest
    response, stream = api.events(f"jobs/{job_id}/logs", last_event_id=str(lines[0]["seq"]), follow="true")
    assert [int(e.id) for e in _until_end(stream)[:-1]] == [line["seq"] for line in lines[1:]]
    response.close()

    refused = api.get(f"jobs/{job_id}/logs", params={"task": 3})
    assert refused.status_code == 422 and refused.json()["field"] == "task", refused.text
    assert "has tasks 0..0" in refused.json()["detail"]
    followed_refused = api.get(f"jobs/{job_id}/logs", params={"task": 3, "follow": "true"})
    assert followed_refused.status_code == 422 and followed_refused.json()["field"] == "task"


def test_follow_a_seed_job_to_succeeded_then_end(seed: str, api: HttpApi) -> None:
    job_id = seed
    response, stream = api.events(f"jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
    events = _until_end(stream)
    assert next(stream, None) is None  # closed after `end`
    response.close()

    kinds = [e.event for e in events]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    end = events[-1].json()
    assert end["state"] == "SUCCEEDED" and end["job_id"] == job_id
    states = [e.json()["state"] for e in events if e.event == "state"]
    assert states[-1] == "SUCCEEDED" and "RUNNING" in states and states.index("RUNNING") < len(states) - 1
    assert not TERMINAL & set(states[:-1])
    assert events[-2].event == "state" and events[-2].json()["state"] == "SUCCEEDED"  # end follows the terminal state
    seqs = _seqs(events)
    assert seqs == sorted(set(seqs)) and end["last_seq"] == seqs[-1]
    metrics = [e.json() for e in events if e.event == "metric"]
    assert metrics and {"test_accuracy"} <= {m["name"] for m in metrics}
    for m in metrics:
        assert m["kind"] == "metric" and m["task_index"] == 0 and isinstance(m["value"], float)
    assert {"task_state"} <= set(kinds)
    tasks = [e.json() for e in events if e.event == "task_state"]
    assert tasks[-1]["state"] == "SUCCEEDED" and tasks[-1]["task_index"] == 0
    # the whole history again, now the job has ended: the same events, the same end
    again = _history(api, job_id)
    assert _seqs(again) == seqs and [e.data for e in again[:-1]] == [e.data for e in events[:-1]]
    assert again[-1].event == "end" and again[-1].json()["state"] == "SUCCEEDED"


def test_metrics_as_json_and_csv_equal_the_cli(http_cluster: Cluster, api: HttpApi, seed: str) -> None:
    controller, _ = http_cluster
    job_id = seed
    _finished(api, job_id)

    points = api.ok("GET", f"jobs/{job_id}/metrics")["points"]
    cli_rows = cli_json(controller.cli("metrics", job_id, "--json"))
    assert points and points == [
        {k: r[k] for k in ("name", "step", "value", "wall_time", "task_index", "seq", "agent_task_id")}
        for r in cli_rows
    ]
    only = api.ok("GET", f"jobs/{job_id}/metrics", params={"name": ["test_accuracy", "f1_macro"]})["points"]
    assert only == [p for p in points if p["name"] in ("test_accuracy", "f1_macro")] and only
    assert api.ok("GET", f"jobs/{job_id}/metrics", params={"name": "no-such-metric"}) == {"points": []}

    response = api.get(f"jobs/{job_id}/metrics", params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows == list(csv.DictReader(io.StringIO(controller.cli("metrics", job_id, "--csv").stdout)))
    assert list(rows[0]) == ["task_index", "step", "name", "value", "wall_time"]
    assert [(r["name"], int(r["step"]), float(r["value"])) for r in rows] == [
        (p["name"], p["step"], p["value"]) for p in points
    ]
    negotiated = api.get(f"jobs/{job_id}/metrics", headers={"Accept": "text/csv"})
    assert negotiated.headers["content-type"].startswith("text/csv") and negotiated.text == response.text


def test_refusals_unknown_job_bad_last_event_id_and_no_token(api: HttpApi, seed: str) -> None:
    for path in ("jobs/j-nope/events", "jobs/j-nope/metrics", "jobs/j-nope/logs", "jobs/j-nope/logs?follow=true"):
        response = api.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    done = seed
    for bad in ("abc", "-1", "1.5", "9" * 30):
        response = api.get(f"jobs/{done}/events", headers={"Last-Event-ID": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["field"] == "Last-Event-ID" and "Last-Event-ID" in response.json()["detail"]
    response = api.get(f"jobs/{done}/events", params={"after": -1})
    assert response.status_code == 422 and response.json()["field"] == "query.after"
    response = api.get(f"jobs/{done}/metrics", params={"format": "xml"})
    assert response.status_code == 422 and response.json()["field"] == "query.format"

    for path in (f"jobs/{done}/events", f"jobs/{done}/metrics", f"jobs/{done}/logs"):
        response = requests.get(api.url(path), timeout=10)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"

    last = api.ok("GET", f"jobs/{done}")["last_event_seq"]
    response, beyond = api.events(f"jobs/{done}/events", follow="false", after=last + 99_999)
    assert [(e.event, e.json()["last_seq"]) for e in beyond] == [("end", last)]  # the job's, not the one asked
    assert api.get("jobs/" + "j" * 101 + "/metrics").json()["field"] == "path.job_id"

    document = api.ok("GET", "/api/v1/openapi.json")
    events = document["paths"]["/api/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {"401", "404", "422"} <= set(events["responses"]) and "`checkpoint`" in events["description"]
    assert "text/csv" in document["paths"]["/api/v1/jobs/{job_id}/metrics"]["get"]["responses"]["200"]["content"]
    assert json.dumps(document)  # serialisable, as served
