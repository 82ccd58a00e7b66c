"""The model registry and job artifacts over HTTP against a real controller and agents: versions listed page by
page and by cursor, fetched by name, version and alias; aliases, tags and descriptions the CLI then shows;
downloads whose bytes hash to the sha256 in the headers (and to the CLI's), byte ranges, deletion refused while
an alias points at a version. The last test deletes a version: it stays last."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from helpers.http_api import HttpApi
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow

MODEL = "http-iris"
Cluster = tuple[ControllerProcess, list[AgentProcess]]


@pytest.fixture(scope="module")
def registered(http_cluster: Cluster) -> tuple[ControllerProcess, HttpApi, list[dict[str, Any]]]:
    """Two versions of MODEL from two quick jobs submitted with the CLI, side by side on the two agents; versions
    follow completion order, so the jobs come back ordered by their model's version."""
    controller, _ = http_cluster
    submitted = [
        cli_json(
            controller.cli(
                *("submit", "-a", "logistic_regression", "-d", "iris", "-p", f"C={c}", "--model-name", MODEL, "--json")
            )
        )
        for c in (0.5, 2.0)
    ]
    with Client(controller.address) as client:
        jobs = sorted((client.wait(j["id"], timeout=120) for j in submitted), key=lambda j: j["model"]["version"])
    assert [(j["state"], j["model"]) for j in jobs] == [
        ("SUCCEEDED", {"name": MODEL, "version": 1}),
        ("SUCCEEDED", {"name": MODEL, "version": 2}),
    ]
    api = HttpApi.of(controller)
    return controller, api, jobs


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_models_page_by_number_and_cursor_and_resolve_refs(
    registered: tuple[ControllerProcess, HttpApi, list[dict[str, Any]]],
) -> None:
    controller, api, jobs = registered
    first = api.ok("GET", "models", params={"name": MODEL, "page": 1, "limit": 1})
    second = api.ok("GET", "models", params={"name": MODEL, "page": 2, "limit": 1})
    assert [m["version"] for m in first["items"]] == [2] and [m["version"] for m in second["items"]] == [1]
    assert (first["total"], first["page"], first["limit"], first["pages"]) == (2, 1, 1, 2)
    assert first["next_cursor"] and second["next_cursor"] is None
    by_cursor = api.ok("GET", "models", params={"name": MODEL, "limit": 1, "cursor": first["next_cursor"]})
    assert by_cursor["items"] == second["items"] and by_cursor["page"] == 2

    shown = cli_json(controller.cli("models", "show", f"{MODEL}:1", "--json"))
    one = api.ok("GET", f"models/{MODEL}:1")
    assert {k: one[k] for k in shown} == shown  # every field the CLI shows, with the same values
    assert (
        one["ref"] == f"{MODEL}:1"
        and one["job_id"] == jobs[0]["id"]
        and one["hyperparameters"]["C"] == jobs[0]["spec"]["hyperparameters"]["C"]
    )
    assert api.ok("GET", f"models/{MODEL}")["version"] == 2  # a bare name: the latest
    versions = api.ok("GET", f"models/{MODEL}/versions", params={"limit": 10})
    assert [m["version"] for m in versions["items"]] == [2, 1] and versions["total"] == 2

    floor = api.ok("GET", "models", params={"name": MODEL, "min_metric": "test_accuracy=0"})
    assert floor["total"] == 2
    assert api.ok("GET", "models", params={"min_metric": "test_accuracy=2"})["total"] == 0
    bad = problem(api.get("models", params={"min_metric": "test_accuracy"}), 422)
    assert bad["field"] == "min_metric" and "NAME=NUMBER" in bad["detail"]
    assert problem(api.get("models", params={"cursor": "not-a-cursor"}), 422)["field"] == "cursor"

    stats = api.ok("GET", "models/stats")
    row = next(r for r in stats["algorithm_stats"] if r["algorithm"] == "logistic_regression")
    assert stats["total_models"] >= 2 and row["count"] >= 2 and 0 < row["best_accuracy"] <= 1
    assert stats == {**cli_json(controller.cli("models", "stats", "--json")), "recent_models": stats["recent_models"]}

    assert "nope" in problem(api.get("models/nope"), 404)["detail"]
    problem(api.get(f"models/{MODEL}:9"), 404)
    problem(api.get("models/nope/versions"), 404)
    assert problem(api.get(f"models/{MODEL}:x"), 422)["field"] == "ref"


def test_a_version_registered_between_pages_repeats_nothing_on_the_next_cursor(
    registered: tuple[ControllerProcess, HttpApi, list[dict[str, Any]]],
) -> None:
    _, api, _ = registered
    everything = [m["ref"] for m in api.ok("GET", "models", params={"limit": 1000})["items"]]
    first = api.ok("GET", "models", params={"limit": 1})
    job = api.ok("POST", "jobs", json={"algorithm": "logistic_regression", "dataset": "iris", "model_name": "keyset"})
    wait_until(lambda: api.ok("GET", f"jobs/{job['id']}")["state"] == "SUCCEEDED", 60, "the keyset model registered")
    assert api.ok("GET", "models", params={"limit": 1})["items"][0]["ref"] == "keyset:1"  # newest first
    rest = api.ok("GET", "models", params={"limit": 1000, "cursor": first["next_cursor"]})  # another limit too
    assert [first["items"][0]["ref"]] + [m["ref"] for m in rest["items"]] == everything  # none twice, none skipped
    assert rest["next_cursor"] is None and rest["total"] == len(everything) + 1 and rest["page"] == 1
    assert (
        problem(api.get("models", params={"cursor": base64.urlsafe_b64encode(b'["page", true]')}), 422)["field"]
        == "cursor"
    )


def test_model_download_hashes_to_its_headers_with_ranges(
    registered: tuple[ControllerProcess, HttpApi, list[dict[str, Any]]],
) -> None:
    controller, api, _ = registered
    shown = cli_json(controller.cli("models", "show", f"{MODEL}:2", "--json"))
    response = api.get(f"models/{MODEL}:2/download")
    assert response.status_code == 200, response.text[:300]
    body = response.content
    digest = response.headers["X-Checksum-Sha256"]
    assert digest == sha256(body) == shown["sha256"] and len(body) == shown["size"]
    assert response.headers["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
    assert response.headers["ETag"] == f'"{digest}"' and response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Content-Disposition"] == f'attachment; filename="{MODEL}-v2.skops"'
    assert (response.headers["X-Model-Ref"], response.headers["X-Model-Format"]) == (f"{MODEL}:2", "skops")

    problem(api.get(f"models/{MODEL}@nobody/download"), 404)  # an alias nobody set
    part = api.get(f"models/{MODEL}:2/download", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == body[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(body)}"
    tail = api.get(f"models/{MODEL}:2/download", headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == body[-7:]
    past = api.get(f"models/{MODEL}:2/download", headers={"Range": f"bytes={len(body)}-"})
    assert problem(past, 416)["title"] == "Range not satisfiable"
    assert past.headers["Content-Range"] == f"bytes */{len(body)}"
    assert api.get(f"models/{MODEL}:2/download", headers={"If-None-Match": f'"{digest}"'}).status_code == 304
    head = api.request("HEAD", f"models/{MODEL}:2/download")
    assert head.status_code == 200 and head.content == b"" and head.headers["X-Checksum-Sha256"] == digest

    named = api.get(f"models/{MODEL}:2/download", params={"format": "skops"})  # (pickle: a conversion, seconds)
    assert named.status_code == 200 and named.content == body
    assert problem(api.get(f"models/{MODEL}:2/download", params={"format": "safetensors"}), 422)["field"] == "format"
    assert api.ok("GET", f"models/{MODEL}:2/config") == {}  # a scikit-learn model needs no config


def test_artifacts_list_and_download_with_sha256(
    registered: tuple[ControllerProcess, HttpApi, list[dict[str, Any]]],
) -> None:
    _, api, jobs = registered
    job_id = jobs[0]["id"]
    listed = api.ok("GET", f"jobs/{job_id}/artifacts")
    assert listed["job_id"] == job_id and listed["total"] == len(listed["items"])
    assert sorted(a["kind"] for a in listed["items"]) == sorted(a["kind"] for a in jobs[0]["artifacts"])
    model = next(a for a in listed["items"] if a["kind"] == "model")
    assert set(model) == {"name", "kind", "size", "sha256", "task_index", "step", "attempt", "created_at"}
    assert api.ok("GET", f"jobs/{job_id}/artifacts", params={"kind": "model"})["items"] == [model]
    paged = api.ok("GET", f"jobs/{job_id}/artifacts", params={"limit": 1})
    rest = api.ok("GET", f"jobs/{job_id}/artifacts", params={"limit": 1, "cursor": paged["next_cursor"]})
    assert paged["items"] + rest["items"] == listed["items"][:2]

    response = api.get(f"jobs/{job_id}/artifacts/{model['name']}")
    assert response.status_code == 200, response.text[:300]
    assert sha256(response.content) == model["sha256"] == response.headers["X-Checksum-Sha256"]
    assert len(response.content) == model["size"] and response.headers["X-Artifact-Kind"] == "model"
    part = api.get(f"jobs/{job_id}/artifacts/{model['name']}", headers={"Range": "bytes=0-15"})
    assert part.status_code == 206 and part.content == response.content[:16]
    problem(api.get(f"jobs/{job_id}/artifacts/{model['name']}", headers={"Range": "bytes=99999999-"}), 416)
    assert "no artifact 'nope.bin'" in problem(api.get(f"jobs/{job_id}/artifacts/nope.bin"), 404)["detail"]
    problem(api.get(f"jobs/{job_id}/artifacts/{model['name']}", params={"attempt": 7}), 404)
    problem(api.get("jobs/no-such-job/artifacts"), 404)


def test_aliases_tags_descriptions_then_delete(
    registered: tuple[ControllerProcess, HttpApi, list[dict[str, Any]]],
) -> None:
    controller, api, _ = registered
    moved = api.ok("PUT", f"models/{MODEL}/aliases/production", json={"version": 1})
    assert (moved["version"], moved["aliases"]) == (1, ["production"])
    assert api.ok("GET", f"models/{MODEL}@production")["version"] == 1
    assert [m["version"] for m in api.ok("GET", "models", params={"alias": "production"})["items"]] == [1]
    assert problem(api.request("PUT", f"models/{MODEL}/aliases/9bad", json={"version": 1}), 422)["field"] == "alias"
    assert (
        problem(api.request("PUT", f"models/{MODEL}/aliases/prod", json={"version": 0}), 422)["field"] == "body.version"
    )
    problem(api.request("PUT", f"models/{MODEL}/aliases/prod", json={"version": 9}), 404)

    api.ok("PUT", f"models/{MODEL}/aliases/staging", json={"version": 2})
    gone = api.ok("DELETE", f"models/{MODEL}/aliases/staging")
    assert gone["version"] == 2 and "staging" not in gone["aliases"]
    problem(api.get(f"models/{MODEL}@staging"), 404)

    tagged = api.ok("POST", f"models/{MODEL}@production/tags", json={"tag": "baseline"})
    assert tagged["tags"] == ["baseline"]
    assert [m["version"] for m in api.ok("GET", "models", params={"tag": "baseline"})["items"]] == [1]
    assert problem(api.post(f"models/{MODEL}:1/tags", json={"tag": "two words"}), 422)["field"] == "tag"
    described = api.ok("PATCH", f"models/{MODEL}:1", json={"description": "the first logistic regression"})
    assert described["description"] == "the first logistic regression"
    shown = cli_json(controller.cli("models", "show", f"{MODEL}@production", "--json"))
    assert (shown["tags"], shown["description"]) == (["baseline"], "the first logistic regression")

    refused = problem(api.delete(f"models/{MODEL}:1"), 422)  # the core's kind for it: a RegistryError
    assert refused["field"] == "ref" and "@production" in refused["detail"]
    assert api.ok("GET", f"models/{MODEL}:1")["version"] == 1  # still there
    deleted = api.ok("DELETE", f"models/{MODEL}:1", params={"force": "true"})
    assert deleted["version"] == 1 and deleted["sha256"]
    problem(api.get(f"models/{MODEL}:1"), 404)
    assert [m["version"] for m in api.ok("GET", f"models/{MODEL}/versions")["items"]] == [2]
