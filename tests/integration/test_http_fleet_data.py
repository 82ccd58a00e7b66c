"""Agents, the dashboard and datasets over the HTTP API, against a running controller with two agents: what a
monitoring tool and a `curl` user see, checked against what the CLI says about the same controller."""

from __future__ import annotations

import base64
import hashlib
import http.client
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.http_api import HttpApi
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

Cluster = tuple[ControllerProcess, list[AgentProcess]]
PROBLEM = "application/problem+json"
QUICK_JOB = {"algorithm": "logistic_regression", "dataset": "iris"}


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def _flowers_csv(path: Path, rows: int = 90) -> Path:
    """Three well separated kinds of flower, four measurements each (iris-like, without importing sklearn)."""
    rng = random.Random(7)
    centres = {"setosa": (5.0, 3.4, 1.5, 0.2), "versicolor": (5.9, 2.8, 4.3, 1.3), "virginica": (6.6, 3.0, 5.6, 2.0)}
    lines = ["sepal_length,sepal_width,petal_length,petal_width,species"]
    for i in range(rows):
        kind = list(centres)[i % 3]
        lines.append(",".join([*(f"{c + rng.uniform(-0.2, 0.2):.2f}" for c in centres[kind]), kind]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_agents(http_cluster: Cluster) -> None:
    controller, _ = http_cluster
    api = HttpApi.of(controller)
    # both agents ONLINE, with their latest telemetry (the first report may be a moment behind the state)

    def reported() -> dict[str, Any] | None:
        page: dict[str, Any] = api.ok("GET", "agents")
        return page if all(a["last_seen"] > 0 and a["memory_total_bytes"] > 0 for a in page["items"]) else None

    listed = wait_until(reported, 10, "telemetry from both agents")
    by_name = {a["name"]: a for a in listed["items"]}
    assert sorted(by_name) == ["agent-0", "agent-1"] and listed["total"] == 2 and listed["next_cursor"] is None
    for agent in by_name.values():
        assert agent["state"] == "ONLINE" and agent["paired"] and agent["error"] == ""
        assert agent["slots_total"] == 1 and agent["slots_used"] + agent["slots_free"] == 1
        assert agent["disk_free_bytes"] > 0 and agent["disk_total_bytes"] >= agent["disk_free_bytes"]
        assert 0 <= agent["cpu_percent"] <= 100 and 0 < agent["memory_used_bytes"] <= agent["memory_total_bytes"]
        assert agent["agent_version"] and agent["python_version"] and "logistic_regression" in agent["workloads"]
        assert agent["gpus"] == len(agent["gpu_stats"]) == 0 and agent["node_id"]
    # the CLI's view of the same agents
    cli_agents = {a["name"]: a for a in cli_json(controller.cli("agents", "--json"))}
    assert {n: (a["id"], a["state"], a["address"]) for n, a in cli_agents.items()} == {
        n: (a["node_id"], a["state"], a["address"]) for n, a in by_name.items()
    }
    # one page at a time, by cursor and by page number
    first = api.ok("GET", "agents", params={"limit": 1})
    second = api.ok("GET", "agents", params={"limit": 1, "cursor": first["next_cursor"]})
    assert [first["items"][0]["name"], second["items"][0]["name"]] == ["agent-0", "agent-1"]
    assert second["next_cursor"] is None
    assert api.ok("GET", "agents", params={"limit": 1, "page": 2})["items"][0]["name"] == "agent-1"
    assert api.ok("GET", "agents", params={"include_refused": "true"})["total"] >= 2
    # one agent, by name or node id prefix
    one = api.ok("GET", "agents/agent-1")
    assert one["node_id"] == by_name["agent-1"]["node_id"] and one["state"] == "ONLINE"
    assert api.ok("GET", f"agents/{one['node_id'][:12]}")["name"] == "agent-1"
    missing = _problem(api.get("agents/nobody"), 404)
    assert "no agent 'nobody'" in missing["detail"] and "agent-0" in missing["detail"]
    assert _problem(api.get("agents/nobody/x"), 404)


@dataclass
class Uploaded:
    path: Path
    sha256: str
    response: requests.Response
    job: dict[str, Any]  # a job that trained on it, ended


@pytest.fixture(scope="module")
def flowers(http_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """A CSV uploaded as `curl -T iris.csv URL?filename=iris.csv` does (the file streamed as the body, its sha256
    checked on arrival), then trained on as `tensorfleet submit --dataset flowers --target species` does: the one
    job of this module."""
    controller, _ = http_cluster
    api = HttpApi.of(controller)
    path = _flowers_csv(tmp_path_factory.mktemp("flowers") / "iris.csv")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with path.open("rb") as fh:
        created = api.request(
            "PUT",
            "datasets/flowers",
            params={"filename": "iris.csv"},
            data=fh,
            headers={"Content-Type": "text/csv", "X-Checksum-Sha256": digest},
        )
    assert created.status_code == 201, created.text
    with Client(controller.address) as client:
        job = client.wait(client.submit({**QUICK_JOB, "dataset": "flowers", "target": "species"})["id"], 60)
    return Uploaded(path, digest, created, job)


def test_dataset_upload_train_download_delete(http_cluster: Cluster, flowers: Uploaded, tmp_path: Path) -> None:
    controller, _ = http_cluster
    api = HttpApi.of(controller)
    iris, digest, created = flowers.path, flowers.sha256, flowers.response
    assert created.headers["location"] == "/api/v1/datasets/flowers"
    dataset = created.json()
    assert dataset["sha256"] == digest and dataset["size"] == iris.stat().st_size
    assert (dataset["name"], dataset["rows"], dataset["format"], dataset["columns"][-1]) == (
        "flowers",
        90,
        "csv",
        "species",
    )
    assert "flowers" in [d["name"] for d in api.ok("GET", "datasets")["items"]]
    assert api.ok("GET", "datasets/flowers") == dataset
    preview = api.ok("GET", "datasets/flowers/preview", params={"rows": 3})
    assert preview["columns"] == dataset["columns"] and len(preview["rows"]) == 3
    assert preview["rows"][0][-1] == "setosa"
    assert _problem(api.get("datasets/flowers/preview", params={"rows": 0}), 422)["field"] == "query.rows"
    # downloaded byte for byte, the sha256 in a header; a Range for resuming
    download = api.get("datasets/flowers/download")
    assert download.status_code == 200 and download.content == iris.read_bytes()
    assert download.headers["x-checksum-sha256"] == digest == hashlib.sha256(download.content).hexdigest()
    assert 'filename="iris.csv"' in download.headers["content-disposition"]
    part = api.get("datasets/flowers/download", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == iris.read_bytes()[10:20]
    head = api.request("HEAD", "datasets/flowers/download")
    assert head.status_code == 200 and not head.content and head.headers["x-checksum-sha256"] == digest
    assert int(head.headers["content-length"]) == dataset["size"]
    # a job trained on it by name
    job = flowers.job
    assert job["state"] == "SUCCEEDED" and job["metrics"]["test_accuracy"] > 0.8
    assert job["spec"]["dataset"] == f"user:{digest}" and job["spec"]["dataset_params"]["target"] == "species"
    # so it cannot be deleted; a dataset nothing uses can
    refused = _problem(api.delete("datasets/flowers"), 409)
    assert f"is used by job(s) {job['id']}" in refused["detail"]
    spare = tmp_path / "spare.csv"
    spare.write_text("a,b\n1,2\n3,4\n")
    with spare.open("rb") as fh:  # `curl --data-binary @spare.csv` sends curl's form content type: accepted
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        again = api.request("PUT", "datasets/spare", data=fh, headers=form)
    assert again.status_code == 201 and again.json()["filename"] == "spare.csv"
    spare.write_text("a,b\n1,2\n3,4\n5,6\n")
    with spare.open("rb") as fh:  # the same name again replaces it (datasets have no versions)
        replaced = api.request("PUT", "datasets/spare", data=fh, headers={"Content-Type": "text/csv"})
    assert replaced.status_code == 200 and replaced.json()["rows"] == 3
    assert api.ok("DELETE", "datasets/spare")["rows"] == 3
    assert "no dataset 'spare'" in _problem(api.get("datasets/spare"), 404)["detail"]
    assert _problem(api.delete("datasets/spare"), 404)
    assert [d["name"] for d in api.ok("GET", "datasets")["items"]] == ["flowers"]


def test_dashboard(http_cluster: Cluster, flowers: Uploaded) -> None:
    """After a job (the fixture's), the summary agrees with what the CLI lists."""
    controller, _ = http_cluster
    api = HttpApi.of(controller)
    with Client(controller.address) as client:
        stats = client.model_stats()
        datasets = client.datasets()
    cli_agents = cli_json(controller.cli("agents", "--json"))
    board = api.ok("GET", "dashboard")
    jobs = cli_json(controller.cli("jobs", "--json"))
    states = ["QUEUED", "RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "CANCELLED"]
    assert board["jobs"]["by_state"] == {s: sum(j["state"] == s for j in jobs) for s in states}
    assert board["jobs"]["total"] == len(jobs) and board["jobs"]["active"] == 0
    assert board["agents"]["by_state"]["ONLINE"] == sum(a["state"] == "ONLINE" for a in cli_agents) == 2
    assert board["agents"]["online"] == board["agents"]["total"] == 2
    assert set(board["agents"]["by_state"]) == {
        "CONNECTING",
        "ONLINE",
        "LOST",
        "DRAINING",
        "REFUSED",
        "OWNER_ACTIVE",
        "SLEEPING",
        "WAKING",
    }
    assert board["slots"] == {"total": 2, "used": 0, "free": 2}
    assert board["gpus"] == {"total": 0, "utilization_percent": None, "memory_used_bytes": 0, "memory_total_bytes": 0}
    assert board["models"] == stats["total_models"] >= 1 and board["datasets"] == len(
        [d for d in datasets if not d["builtin"]]  # ListDatasets lists the built-in ones too
    )
    assert board["controller"]["version"] == api.ok("GET", "/health")["version"]
    assert 0 < board["controller"]["uptime_seconds"] < 300


def test_refused_uploads_leave_nothing_behind(http_cluster: Cluster, tmp_path: Path) -> None:
    controller, _ = http_cluster
    api = HttpApi.of(controller)
    before = api.ok("GET", "datasets")["items"]
    body = _flowers_csv(tmp_path / "iris.csv").read_bytes()
    wrong = _problem(api.request("PUT", "datasets/wrong", data=body, params={"sha256": "0" * 64}), 422)
    assert wrong["field"] == "sha256" and hashlib.sha256(body).hexdigest() in wrong["detail"]
    assert _problem(api.get("datasets/wrong"), 404)
    bad = _problem(api.request("PUT", f"datasets/{quote('bad name!')}", data=body), 422)
    assert bad["field"] == "name"
    assert _problem(api.request("PUT", "datasets/x", data=body, params={"sha256": "abc"}), 422)["field"] == "sha256"
    assert _problem(api.request("PUT", "datasets/x", data=body, params={"filename": "x.txt"}), 422)["field"] == "file"
    assert "no data rows" in _problem(api.request("PUT", "datasets/x", data=b"a,b\n"), 422)["detail"]
    for name in ("x\r\ny.csv", "\x1b[31mx.csv", "x\x7f.csv"):  # printed later by `datasets list`: refused
        named = _problem(api.request("PUT", "datasets/x", data=body, params={"filename": name}), 422)
        assert named["field"] == "filename" and "control characters" in named["detail"]
    for listing in ("agents", "datasets"):  # a cursor nested past the JSON parser's recursion, or too long
        for depth, field in ((3000, "cursor"), (5000, "query.cursor")):
            cursor = base64.urlsafe_b64encode(b"[" * depth).decode()
            assert _problem(api.get(listing, params={"cursor": cursor}), 422)["field"] == field
    # multipart (curl -F) is not a raw upload; chunked without a length is refused before anything is written
    assert "curl -T" in _problem(api.request("PUT", "datasets/x", files={"file": ("x.csv", body)}), 415)["detail"]
    assert "Content-Length" in _problem(api.request("PUT", "datasets/x", data=iter([body])), 411)["detail"]
    # a Content-Length past the limit is refused before the body is read
    address = urlsplit(api.base_url)
    conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        conn.putrequest("PUT", "/api/v1/datasets/huge?filename=huge.csv")
        conn.putheader("Authorization", f"Bearer {api.token}")
        conn.putheader("Content-Type", "text/csv")
        conn.putheader("Content-Length", str(1 << 40))
        conn.endheaders(b"a,b\n")
        answer = conn.getresponse()
        assert answer.status == 413 and b"at most" in answer.read()
    finally:
        conn.close()
    assert api.ok("GET", "datasets")["items"] == before
    assert not list((controller.data_dir / "blobs" / "incoming").glob("upload-*"))


def test_drain_and_remove_an_agent(http_cluster: Cluster) -> None:
    """Last in the module: it leaves agent-1 drained, then forgotten."""
    controller, _ = http_cluster
    api = HttpApi.of(controller)
    drained = api.ok("POST", "agents/agent-1/drain")
    assert drained["name"] == "agent-1" and drained["state"] == "DRAINING"
    board = api.ok("GET", "dashboard")["agents"]
    assert board["by_state"]["DRAINING"] == 1 and board["by_state"]["ONLINE"] == 1 and board["online"] == 2
    assert {a["name"]: a["state"] for a in cli_json(controller.cli("agents", "--json"))}["agent-1"] == "DRAINING"
    removed = api.ok("DELETE", f"agents/{drained['node_id']}")
    assert removed["name"] == "agent-1"
    assert _problem(api.delete("agents/nobody"), 404)
    assert _problem(api.post("agents/nobody/drain"), 404)
