"""Jobs over HTTP, as a `curl` user drives them: submit a seed job and poll it to SUCCEEDED (the CLI sees the same
job), list with filters and both page forms, cancel, pause, resume, retry, resubmit and delete, and the statuses
and fields named in the problem documents when a request is wrong. One cluster (`http_cluster`) for the module."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers.controller import cli_json
from helpers.http_api import HttpApi
from helpers.waiting import wait_until
from tensorfleet_desktop.demo import DEMO_JOBS

pytestmark = pytest.mark.slow

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SEED = next(spec for spec in DEMO_JOBS if spec["algorithm"] == "logistic_regression")  # about a second


@pytest.fixture(scope="module")
def api(http_cluster: Any) -> HttpApi:
    controller, _agents = http_cluster
    return HttpApi.of(controller)


def _submit(api: HttpApi, spec: dict[str, Any], user: str = "") -> dict[str, Any]:
    headers = {"X-TensorFleet-User": user} if user else {}
    response = api.post("jobs", json=spec, headers=headers)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    return job


def _wait(api: HttpApi, job_id: str, states: tuple[str, ...] = TERMINAL, timeout: float = 60) -> dict[str, Any]:
    """Poll GET /jobs/{id}, as a script without SSE would."""
    job: dict[str, Any] = wait_until(
        lambda: (j := api.ok("GET", f"jobs/{job_id}"))["state"] in states and j, timeout, f"{job_id} in {states}"
    )
    return job


def _problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body["field"] == field, body
    return body


def test_seed_job_submitted_and_polled_to_succeeded_is_the_job_the_cli_sees(http_cluster: Any, api: HttpApi) -> None:
    controller, _agents = http_cluster
    job = _submit(api, SEED, user="ci-pipeline")
    assert job["state"] == "QUEUED" and job["submitter"] == "ci-pipeline" and job["name"] == SEED["name"]
    assert (job["algorithm"], job["dataset"], job["spec"]["model_name"]) == (
        "logistic_regression",
        "wine",
        "wine-logreg",
    )
    done = _wait(api, job["id"])
    assert done["state"] == "SUCCEEDED", done["error"]
    assert done["progress"] == 1.0 and done["finished_at"] >= done["started_at"] >= done["created_at"] > 0
    assert done["tasks"] == {"total": 1, "completed": 1, "failed": 0, "attempts": 1}
    assert done["model"]["name"] == "wine-logreg" and len(done["model"]["sha256"]) == 64
    assert done["metrics"]["test_accuracy"] > 0.8 and done["last_event_seq"] > 0
    assert api.ok("GET", f"jobs/{job['id'][:8]}")["id"] == job["id"]  # a prefix, as the CLI takes

    (task,) = api.ok("GET", f"jobs/{job['id']}/tasks")["items"]
    assert (task["index"], task["state"], task["attempt"], task["failures"]) == (0, "SUCCEEDED", 1, 0)
    assert task["agent"] in ("agent-0", "agent-1") and task["node_id"] and task["finished_at"] >= task["started_at"]

    cli = cli_json(controller.cli("status", job["id"], "--json"))
    for key in ("id", "name", "state", "progress", "created_at", "started_at", "finished_at", "error"):
        assert cli[key] == done[key], key
    assert cli["metrics"] == done["metrics"] and cli["tasks"] == done["tasks"]
    assert cli["model"] == {"name": done["model"]["name"], "version": done["model"]["version"]}
    assert [(t["agent"], t["node_id"], t["attempt"]) for t in cli["task_list"]] == [
        (task["agent"], task["node_id"], task["attempt"])
    ]


def test_resubmit_with_changed_hyperparameters(api: HttpApi) -> None:
    spec = {"algorithm": "sleep", "hyperparameters": {"seconds": 0.1}, "name": "nap", "group": "naps"}
    job = _submit(api, spec, user="someone")
    _wait(api, job["id"])
    again = api.post(f"jobs/{job['id']}/resubmit", json={"params": {"seconds": 0.2}})  # as `tensorfleet resubmit`
    assert again.status_code == 201, again.text
    copy = again.json()
    assert again.headers["Location"] == f"/api/v1/jobs/{copy['id']}" and copy["id"] != job["id"]
    assert copy["spec"]["hyperparameters"] == {"seconds": 0.2} and (copy["name"], copy["group"]) == ("nap", "naps")
    assert copy["submitter"] == "someone"  # in the old job's name, as over gRPC
    same = api.post(f"jobs/{job['id']}/resubmit")  # no body: an identical copy
    assert same.status_code == 201 and same.json()["spec"]["hyperparameters"] == {"seconds": 0.1}, same.text
    _problem(api.post(f"jobs/{job['id']}/resubmit", json={"params": [1]}), 422, "body.params")
    _problem(api.post(f"jobs/{job['id']}/resubmit", json={"params": {"seconds": -1}}), 422, "hyperparameters.seconds")
    assert _wait(api, copy["id"])["state"] == _wait(api, same.json()["id"])["state"] == "SUCCEEDED"


def test_list_filters_and_both_page_forms(api: HttpApi) -> None:
    label = f"lst{time.monotonic_ns()}"
    specs: list[dict[str, Any]] = [
        {"algorithm": "noop", "name": f"{label}-Alpha", "group": label},
        {"algorithm": "noop", "name": f"{label}-beta", "tags": [label, "x"]},
        {"algorithm": "fail", "name": f"{label}-gamma", "tags": [label], "max_retries": 0},
        {"algorithm": "noop", "name": f"{label}-delta", "group": label},
        {"algorithm": "noop", "name": f"{label}-alphabet", "tags": [label]},
    ]
    jobs = [_submit(api, spec, user=f"{label}-{'ann' if i % 2 else 'bob'}") for i, spec in enumerate(specs)]
    for job in jobs:
        _wait(api, job["id"])
    newest_first = [j["id"] for j in reversed(jobs)]

    def ids(**params: Any) -> list[str]:
        return [j["id"] for j in api.ok("GET", "jobs", params={"label": label, **params})["items"]]

    assert ids() == newest_first  # group or tag
    assert ids(state="failed") == [jobs[2]["id"]]  # any case
    assert ids(state=["SUCCEEDED", "Failed"]) == newest_first
    assert ids(user=f"{label}-ann") == [jobs[3]["id"], jobs[1]["id"]]
    assert ids(name="ALPHA") == [jobs[4]["id"], jobs[0]["id"]]  # case-insensitive substring
    assert ids(sweep="true") == [] and ids(sweep="false") == newest_first
    assert [j["id"] for j in api.ok("GET", "jobs", params={"user": f"{label}-bob"})["items"]] == [
        jobs[4]["id"],
        jobs[2]["id"],
        jobs[0]["id"],
    ]
    _problem(api.get("jobs", params={"state": "DONE"}), 422, "state")
    _problem(api.get("jobs", params={"limit": 0}), 422, "query.limit")
    _problem(api.get("jobs", params={"cursor": "%%%"}), 422, "cursor")

    first = api.ok("GET", "jobs", params={"label": label, "page": 1, "limit": 2})
    assert (first["total"], first["page"], first["limit"]) == (5, 1, 2)
    pages = [first["items"]] + [
        api.ok("GET", "jobs", params={"label": label, "page": n, "limit": 2})["items"] for n in (2, 3, 4)
    ]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [j["id"] for p in pages for j in p] == newest_first

    page = api.ok("GET", "jobs", params={"label": label, "limit": 2})
    seen = [j["id"] for j in page["items"]]
    newcomer = _submit(api, {"algorithm": "noop", "group": label})  # between pages: newest, so before the cursor
    while page["next_cursor"]:
        page = api.ok("GET", "jobs", params={"label": label, "limit": 2, "cursor": page["next_cursor"]})
        seen += [j["id"] for j in page["items"]]
    assert seen == newest_first  # no job twice, none skipped, the newcomer not pushed in
    assert ids(limit=1) == [newcomer["id"]]
    _wait(api, newcomer["id"])


def test_bad_requests_answer_problems_naming_the_field_and_leave_no_job(http_cluster: Any, api: HttpApi) -> None:
    before = api.ok("GET", "jobs", params={"limit": 1})["total"]
    body = _problem(api.post("jobs", json={"algorithm": "no_such_algorithm", "dataset": "iris"}), 422, "algorithm")
    assert "no_such_algorithm" in body["detail"]
    _problem(api.post("jobs", json={"algorithm": "logistic_regression", "dataset": "iris", "oops": 1}), 422, "oops")
    _problem(api.post("jobs", json={"algorithm": "sleep", "hyperparameters": {"seconds": -1}}), 422)
    _problem(api.post("jobs", json=["logistic_regression", "iris"]), 422, "body")  # not an object
    _problem(api.post("jobs", json="iris"), 422, "body")
    _problem(api.post("jobs"), 422, "body")  # no body
    not_json = api.post("jobs", data=b"{algorithm: iris", headers={"Content-Type": "application/json"})
    _problem(not_json, 400)
    _problem(api.post("jobs", data=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)
    huge = {"algorithm": "noop", "name": "x" * (2 << 20)}
    _problem(api.post("jobs", json=huge), 413)
    _problem(api.post("jobs", json={"algorithm": "noop"}, headers={"X-TensorFleet-User": "x" * 300}), 422)
    assert api.ok("GET", "jobs", params={"limit": 1})["total"] == before  # nothing half-written

    for method, path in (
        ("GET", "jobs/j0000000000"),
        ("GET", "jobs/j0000000000/tasks"),
        ("POST", "jobs/j0000000000/cancel"),
        ("POST", "jobs/j0000000000/pause"),
        ("POST", "jobs/j0000000000/resume"),
        ("POST", "jobs/j0000000000/retry"),
        ("POST", "jobs/j0000000000/resubmit"),
        ("DELETE", "jobs/j0000000000"),
    ):
        assert "j0000000000" in _problem(api.request(method, path), 404)["detail"], (method, path)

    anonymous = HttpApi(api.base_url, "")
    del anonymous.session.headers["Authorization"]
    for method, path in (("GET", "jobs"), ("POST", "jobs"), ("GET", "jobs/j0000000000")):
        response = anonymous.request(method, path, json={"algorithm": "noop"})
        _problem(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    _problem(HttpApi(api.base_url, "wrong-token").get("jobs"), 401)
    assert api.ok("GET", "jobs", params={"limit": 1})["total"] == before


def test_deep_json_other_content_types_and_a_client_gone_mid_body(http_cluster: Any, api: HttpApi) -> None:
    controller, _agents = http_cluster
    before = api.ok("GET", "jobs", params={"limit": 1})["total"]
    for levels in (50_000, 700, 33):  # the parser's recursion, the core's walk, just past the cap: all one 422
        deep = b'{"algorithm": "noop", "hyperparameters": {"h": ' + b"[" * levels + b"]" * levels + b"}}"
        body = _problem(api.post("jobs", data=deep, headers={"Content-Type": "application/json"}), 422, "body")
        assert "32 levels" in body["detail"]
    # curl -d sends a form content type: read as JSON on every route; a body that says it is something else: 415
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    _problem(api.post("jobs", data='{"algorithm": "no_such_algorithm"}', headers=form), 422, "algorithm")
    _problem(api.request("PATCH", "models/no-such-model", data='{"description": "x"}', headers=form), 404)
    for path, method in (("jobs", "POST"), ("models/no-such-model", "PATCH")):
        plain = api.request(method, path, data='{"description": "x"}', headers={"Content-Type": "text/plain"})
        assert "application/json" in _problem(plain, 415, "Content-Type")["detail"]

    url = urlsplit(api.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw:  # announces 1000 bytes, sends 20
        raw.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
            + f"Authorization: {api.session.headers['Authorization']}\r\n\r\n".encode()
            + b'{"algorithm": "noop"'
        )
    time.sleep(0.3)
    assert api.ok("GET", "jobs", params={"limit": 1})["total"] == before  # nothing half-written
    assert "internal error" not in controller.logs() and "ClientDisconnect" not in controller.logs()


def test_cancel_pause_resume_retry_a_running_job_and_conflicts(api: HttpApi) -> None:
    job = _submit(api, {"algorithm": "sleep", "hyperparameters": {"seconds": 120}, "name": "long-sleep"})
    running = _wait(api, job["id"], ("RUNNING",), timeout=30)
    assert running["agents"] and running["agents"][0] in ("agent-0", "agent-1")
    _problem(api.post(f"jobs/{job['id']}/resume"), 409)  # only a paused job resumes
    _problem(api.delete(f"jobs/{job['id']}"), 409)  # not ended: cancel it first
    _problem(api.post(f"jobs/{job['id']}/retry"), 409)
    assert api.ok("POST", f"jobs/{job['id']}/pause")["state"] == "PAUSED"
    assert api.ok("POST", f"jobs/{job['id']}/resume")["state"] == "QUEUED"
    _wait(api, job["id"], ("RUNNING",), timeout=30)
    cancelled = api.ok("POST", f"jobs/{job['id']}/cancel")
    assert cancelled["state"] == "CANCELLED" and cancelled["error"] == "cancelled by the user"
    assert api.ok("GET", f"jobs/{job['id']}")["state"] == "CANCELLED"
    assert {t["state"] for t in api.ok("GET", f"jobs/{job['id']}/tasks")["items"]} == {"CANCELLED"}
    assert "already ended" in _problem(api.post(f"jobs/{job['id']}/cancel"), 409)["detail"]
    _problem(api.post(f"jobs/{job['id']}/pause"), 409)
    assert api.ok("POST", f"jobs/{job['id']}/retry")["state"] == "QUEUED"  # a cancelled job runs again
    assert api.ok("POST", f"jobs/{job['id']}/cancel")["state"] == "CANCELLED"


def test_delete_a_finished_job(api: HttpApi) -> None:
    job = _submit(api, {"algorithm": "noop", "name": "to-delete"})
    assert _wait(api, job["id"])["state"] == "SUCCEEDED"
    _problem(api.post(f"jobs/{job['id']}/cancel"), 409)  # a finished job cannot be cancelled
    deleted = api.ok("DELETE", f"jobs/{job['id']}")
    assert deleted["id"] == job["id"] and deleted["state"] == "SUCCEEDED"
    _problem(api.get(f"jobs/{job['id']}"), 404)
    _problem(api.delete(f"jobs/{job['id']}"), 404)
    listed = api.ok("GET", "jobs", params={"name": "to-delete", "limit": 1000})["items"]
    assert job["id"] not in {j["id"] for j in listed}
