"""Jobs pages read from the controller's index (job_index.py) on a real controller, over gRPC ListJobs and
GET /api/v1/jobs: filtered by state only (the indexed path), through cancel, pause, retry and delete, every page
form gives the jobs a full listing gives, newest first, and the totals match. No agent: jobs stay queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.controller import ControllerProcess
from helpers.http_api import HttpApi
from tensorfleet_desktop.client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    root = Path(tmp_path_factory.mktemp("jobs-index"))
    proc = ControllerProcess(root / "controller", ["--no-mdns", "--http-port", "0"]).start()
    yield proc
    proc.stop()


def _walk(api: HttpApi, **params: Any) -> tuple[list[str], int]:
    """Every page by cursor, 2 at a time: the ids seen and the total each page said."""
    page = api.ok("GET", "jobs", params={**params, "limit": 2})
    seen, totals = [j["id"] for j in page["items"]], {page["total"]}
    while page["next_cursor"]:
        page = api.ok("GET", "jobs", params={**params, "limit": 2, "cursor": page["next_cursor"]})
        seen += [j["id"] for j in page["items"]]
        totals.add(page["total"])
    assert len(totals) == 1, totals
    return seen, totals.pop()


def _numbered(api: HttpApi, **params: Any) -> list[str]:
    pages = [api.ok("GET", "jobs", params={**params, "limit": 3, "page": n})["items"] for n in (1, 2, 3, 4)]
    return [j["id"] for page in pages for j in page]


def test_state_pages_follow_every_change(controller: ControllerProcess) -> None:
    api = HttpApi.of(controller)
    with Client(controller.address) as client:
        ids = [client.submit({"algorithm": "noop", "name": f"ix{i}"})["id"] for i in range(7)]
        newest = ids[::-1]
        client.cancel(ids[1])
        client.cancel(ids[4])
        client.pause(ids[5])
        queued = [i for i in newest if i not in (ids[1], ids[4], ids[5])]

        def both(*states: str, limit: int = 0) -> list[str]:
            """ListJobs' page; the HTTP pages of the same filter must list the same jobs."""
            grpc = [j["id"] for j in client.jobs(states, limit=limit)]
            http, total = _walk(api, state=list(states))
            assert (http[: limit or None], total) == (grpc, len(http))
            assert _numbered(api, state=list(states)) == http
            return grpc

        assert both("CANCELLED", "PAUSED") == [ids[5], ids[4], ids[1]]  # two state lists merged, newest first
        assert both() == newest  # no filter: the index of all jobs
        assert both("QUEUED") == queued
        assert both("QUEUED", limit=2) == queued[:2]
        assert both("RUNNING") == []

        client.retry(ids[1])  # CANCELLED -> QUEUED: filed under its new state, in its place by age
        assert both("CANCELLED") == [ids[4]]
        assert both("QUEUED") == [i for i in newest if i not in (ids[4], ids[5])]
        client.resume(ids[5])
        assert both("PAUSED") == [] and both("QUEUED", limit=3) == [ids[6], ids[5], ids[3]]

        assert api.delete(f"jobs/{ids[4]}").status_code in (200, 204)
        assert both("CANCELLED") == []
        assert both() == [i for i in newest if i != ids[4]]
        assert api.ok("GET", "jobs", params={"limit": 1})["total"] == 6
