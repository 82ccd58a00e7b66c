"""Schemathesis against the OpenAPI document a running controller serves: for every operation in it, generated
requests sent with the client token over real HTTP must get no 5xx, only the statuses the document declares, in the
declared media types, with bodies and declared headers that match their schemas.

Three passes over every operation: valid requests with generated path parameters (mostly unknown ids: 404s and
422s), invalid requests (422/400), then valid requests on the ids of what exists (a finished job, its artifacts and
model, a dataset, an agent), so real 200 bodies are held to their schemas too; that pass reads before it writes and
deletes last. Bounded and deterministic: a fixed number of examples per operation and pass, Hypothesis derandomized
(the same requests every run), no shrinking (a failure is reported as generated).

Nothing is excluded. The SSE routes (`follow` defaults to true) end: generated ids name no job (404 at once) and the
known job has finished (its history, then `end`); every request has a timeout that would report one that hangs."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from helpers.http_api import HttpApi

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
GENERATED, INVALID, KNOWN = "generated ids", "invalid", "known ids"
EXAMPLES = {GENERATED: 6, INVALID: 5, KNOWN: 5}  # per operation and pass: 30 to 55 s in all on 2 cores
MODES = {GENERATED: GenerationMode.POSITIVE, INVALID: GenerationMode.NEGATIVE, KNOWN: GenerationMode.POSITIVE}
ORDER = {"get": 0, "head": 0, "post": 1, "put": 1, "patch": 1, "delete": 2}  # the known pass: read, write, delete
REQUEST_TIMEOUT = 15.0


def seed(api: HttpApi) -> dict[str, str]:
    """What exists for the known-ids pass: a finished job (so a model, metrics, logs, artifacts), a dataset, an
    agent; the values of the path parameters that name them."""
    job = api.ok("POST", "jobs", json={"algorithm": "logistic_regression", "dataset": "iris"})
    deadline = time.monotonic() + 60
    while job["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = api.ok("GET", f"jobs/{job['id']}")
    assert job["state"] == "SUCCEEDED", job
    csv = b"x,y\n1,0\n2,1\n"
    dataset = api.ok("PUT", "datasets/st-seed", data=csv, headers={"Content-Type": "text/csv"})
    artifacts = api.ok("GET", f"jobs/{job['id']}/artifacts")["items"]
    agents = api.ok("GET", "agents")["items"]
    assert artifacts and agents and job["model"]
    model = job["model"]
    return {
        "job_id": job["id"],
        "artifact": artifacts[0]["name"],
        "ref": f"{model['name']}:{model['version']}",
        "model": model["name"],
        "dataset": dataset["name"],
        "agent": agents[0]["name"],
    }


def known_path(path: str, names: list[str], known: dict[str, str]) -> dict[str, str]:
    """The path parameters of `path` that name something that exists (the others are generated)."""
    fixed = {}
    for name in names:
        if name == "name":  # artifacts, datasets and models each call theirs `name`
            value = known["artifact"] if "/artifacts/" in path else known.get(path.split("/")[3].rstrip("s"))
        else:
            value = known.get(name)
        if value is not None:
            fixed[name] = value
    return fixed


def run_operation(operation: Any, examples: int, strategy: Any, call: Callable[[Any], None]) -> None:
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def test(case: Any) -> None:
        call(case)

    test()


def test_every_operation_holds_to_the_served_openapi_document(http_cluster: Any) -> None:
    controller, _agents = http_cluster
    api = HttpApi.of(controller)
    known = seed(api)
    schema = schemathesis.openapi.from_url(api.url("/api/v1/openapi.json"), timeout=10)  # open: no token
    session = requests.Session()
    token = {"Authorization": f"Bearer {api.token}"}
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    spent: dict[str, float] = {}

    def call(case: Any) -> None:
        case.headers = {**(case.headers or {}), **token}  # a generated Authorization would only test the gate
        response = case.call_and_validate(
            base_url=api.base_url, session=session, checks=CHECKS, timeout=REQUEST_TIMEOUT
        )
        statuses[f"{case.operation.label}"][response.status_code] += 1

    results = list(schema.get_all_operations())
    unreadable = [str(result.err()) for result in results if not isinstance(result, Ok)]
    assert not unreadable, f"operations schemathesis cannot read: {unreadable}"
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    failures: list[str] = []
    for run in (GENERATED, INVALID, KNOWN):
        ordered = sorted(operations, key=lambda op: ORDER.get(op.method.lower(), 1)) if run == KNOWN else operations
        for operation in ordered:
            names = [p.name for p in operation.path_parameters]
            fixed = known_path(operation.path, names, known) if run == KNOWN else {}
            if run == KNOWN and not fixed:
                continue  # nothing it names exists, or it names nothing: the first pass covered it
            strategy = operation.as_strategy(generation_mode=MODES[run], path_parameters=fixed or None)
            started = time.monotonic()
            try:
                run_operation(operation, EXAMPLES[run], strategy, call)
            except Unsatisfiable:
                pass  # nothing invalid can be generated for it (no parameters, no body): nothing to send
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failure, reported together
                failures.append(f"{operation.label} ({run}): {type(exc).__name__}: {exc}"[:3000])
            finally:
                spent[f"{operation.label} ({run})"] = time.monotonic() - started
    for label, seconds in sorted(spent.items(), key=lambda kv: -kv[1])[:5]:
        print(f"{seconds:6.2f} s {label}")
    for label, seen in sorted(statuses.items()):
        print(f"{label}: {dict(sorted(seen.items()))}")
    assert len(operations) >= 30, f"only {len(operations)} operations in the document"
    ok = sum(n for seen in statuses.values() for status, n in seen.items() if status < 300)
    assert ok >= 100, f"only {ok} 2xx answers: the passes reached too little"
    assert not failures, f"{len(failures)} failing operation(s):\n\n" + "\n\n".join(failures)
