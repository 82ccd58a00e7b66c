"""Issue 24, identity in-process: the permission table, named tokens (hashing, revocation, last use), and the
interceptor's and HTTP gate's shared parts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller import principals
from tensorfleet_desktop.controller.errors import JobError, NotFoundError
from tensorfleet_desktop.controller.failures import Kind, classify
from tensorfleet_desktop.controller.principals import (
    ADMIN,
    USER,
    VIEWER,
    PermissionDenied,
    Principal,
    Unauthenticated,
    allow,
    allow_owner,
    rule_for,
)
from tensorfleet_desktop.controller.tokens import PREFIX, TokenBook

ROOT = Path(__file__).resolve().parents[2]
ALICE, BOB, ROOT_ADMIN = Principal("alice", USER, True), Principal("bob", VIEWER, True), Principal("root", ADMIN)


def _service_methods() -> set[str]:
    proto = (ROOT / "proto" / "tensorfleet" / "v1" / "controller.proto").read_text()
    body = proto[proto.index("service ControllerService") :]
    return set(re.findall(r"rpc (\w+)\(", body))


def test_every_method_has_its_own_rule_and_reads_are_open_to_viewers() -> None:
    methods = _service_methods() - {"JoinCluster"}  # admitted by its join credential, never by a token
    assert methods - set(principals.RULES) == set()  # none falls to the admin-only default by oversight
    assert set(principals.RULES) - methods == set()  # none names a method that is gone
    for method in methods:
        rule = rule_for(method)
        reads = method.startswith(("Get", "List", "Watch", "Preview", "Read", "Download")) or method == "ModelStats"
        reads = reads and method != "ListTokens"  # who holds which token is the admin's
        assert (rule.need == VIEWER) == reads, method
        if rule.need == VIEWER:
            allow(BOB, rule)
    assert rule_for("/tensorfleet.v1.ControllerService/NoSuchMethod").need == ADMIN  # fail closed


@pytest.mark.parametrize(
    ("who", "method", "message"),
    [
        (BOB, "SubmitJob", "user bob (viewer) may not submit jobs"),
        (BOB, "CancelJob", "user bob (viewer) may not cancel jobs"),
        (ALICE, "DeleteModel", "user alice (user) may not delete models"),
        (ALICE, "PairAgent", "user alice (user) may not pair agents"),
        (ALICE, "CreateToken", "user alice (user) may not create tokens"),
        (ALICE, "SetQuota", "user alice (user) may not set quotas"),
        (ALICE, "Shutdown", "user alice (user) may not shut the controller down"),
    ],
)
def test_a_refusal_names_the_caller_its_role_and_the_action(who: Principal, method: str, message: str) -> None:
    with pytest.raises(PermissionDenied) as caught:
        allow(who, rule_for(method))
    assert str(caught.value) == message
    assert classify(caught.value).kind is Kind.DENIED


def test_users_control_their_own_jobs_and_admins_everyones() -> None:
    cancel = rule_for("CancelJob")
    allow_owner(ALICE, cancel, "j1234567890", "alice")
    allow_owner(ALICE, cancel, "j1234567890", "alice@laptop")  # submitted before named tokens, as user@host
    allow_owner(ROOT_ADMIN, cancel, "j1234567890", "alice")
    with pytest.raises(PermissionDenied, match="job j1234567 belongs to carol: only carol or an admin may cancel it"):
        allow_owner(ALICE, cancel, "j1234567890", "carol@desk")
    allow_owner(ALICE, rule_for("GetJob"), "j1234567890", "carol")  # reading is not owned
    # resubmitting makes the caller's own new job and leaves carol's as it is: reading it suffices
    allow_owner(ALICE, rule_for("ResubmitJob"), "j1234567890", "carol")
    with pytest.raises(PermissionDenied, match="may not resubmit jobs"):
        allow(BOB, rule_for("ResubmitJob"))  # a viewer submits nothing
    assert rule_for("DescribeModel").action == "describe_model"  # audited like the other model changes


def test_submitter_and_audit_reader() -> None:
    assert principals.submitter_for(ALICE, "mallory@host") == "alice"  # a named token's name wins
    assert principals.submitter_for(Principal("root", ADMIN), "dev@box") == "dev"  # the client token: what it sends
    assert principals.submitter_for(Principal("root", ADMIN), "") == "root"
    assert principals.submitter_for(Principal("", ADMIN), "") == "unknown"
    assert principals.audit_user(ROOT_ADMIN, "") == "" and principals.audit_user(ROOT_ADMIN, "bob") == "bob"
    assert principals.audit_user(ALICE, "") == "alice"
    with pytest.raises(PermissionDenied, match="may read only their own audit entries"):
        principals.audit_user(ALICE, "bob")


def _http_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the HTTP app serves. FastAPI 0.165 keeps an included router as one
    `_IncludedRouter` entry (no path, no methods) holding the original router and its prefix: walk into those."""
    from tensorfleet_desktop.controller.http.app import create_app

    def walk(routes: Any, prefix: str) -> set[tuple[str, str]]:
        found = set()
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                found |= walk(inner.routes, prefix + route.include_context.prefix)
                continue
            for method in getattr(route, "methods", ()) or ():
                found.add((method, prefix + route.path))
        return found

    app = create_app(Any)  # type: ignore[arg-type]  # the routes only: no request is made
    return walk(app.routes, "")


def test_every_mutating_http_route_follows_a_method_rule() -> None:
    """A new route that changes something is either in HTTP_ROUTES or admin-only (fail closed, refusing users):
    listed here so it is a choice. Every table entry names a route that exists."""
    from tensorfleet_desktop.controller.http.app import PREFIX, create_app

    served = _http_routes()
    documented = create_app(Any).openapi()["paths"]  # type: ignore[arg-type]  # FastAPI's own view of them
    plain = {(m, re.sub(r":\w+}", "}", p)) for m, p in served}  # `{name:path}` is `{name}` in the document
    assert {(m.upper(), p) for p, ops in documented.items() for m in ops} <= plain  # the walk missed none
    api = {(m, p.removeprefix(PREFIX)) for m, p in served if p.startswith(f"{PREFIX}/")}
    mutating = {(m, p) for m, p in api if m not in ("GET", "HEAD")}  # raw templates: what a request's route says
    assert len(mutating) >= 20, sorted(mutating)  # 24 today: jobs, agents, datasets, models, tokens, quotas
    unlisted = sorted(f"{m} {p}" for m, p in mutating if not principals.http_rule(m, p)[0])
    assert unlisted == []
    stale = sorted(f"{m} {p}" for m, p in principals.HTTP_ROUTES if (m, p) not in api)
    assert stale == []
    assert principals.http_rule("POST", "/jobs/{job_id}/cancel")[0] == "CancelJob"
    assert principals.http_rule("GET", "/tokens")[1].need == ADMIN  # a GET listed as admin's stays admin's
    assert principals.http_rule("POST", "/no/such/route")[1].need == ADMIN


class _Store:
    """What TokenBook needs of a store: the tokens table."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def save_team_record(self, table: str, key: str, body: dict[str, Any] | None) -> None:
        assert table in ("tokens", "quotas")
        self.writes += 1
        if body is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = dict(body)

    async def load_team_records(self, table: str) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.rows.items()}


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_named_tokens_are_stored_hashed_and_revocable() -> None:
    store, clock = _Store(), _Clock()
    book = TokenBook(store, "tfc-client-token", clock)  # type: ignore[arg-type]
    record, token = book.create("alice", "user", "root")
    assert token.startswith(f"{PREFIX}{record.id}_")
    secret = token[len(f"{PREFIX}{record.id}_") :]
    assert len(secret) >= 43  # 32 random bytes, urlsafe base64
    assert secret not in repr(store.rows) and record.hash in repr(store.rows)  # only the hash is kept
    assert book.authenticate(token, "mallory") == Principal("alice", USER, named_token=True)
    assert book.authenticate("tfc-client-token", "dev@box") == Principal("dev", ADMIN, named_token=False)
    assert book.authenticate("tfc-client-token", "bad name;rm") == Principal("", ADMIN)  # not a plausible user
    for wrong, said in (
        (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "is not one this controller issued"),
        (f"{PREFIX}ffffffffffff_{secret}", "is not one this controller issued"),
        ("tfc-other", "the client token is wrong"),
        ("", "no client token was sent"),
    ):
        with pytest.raises(Unauthenticated, match=said):
            book.authenticate(wrong)
    with pytest.raises(JobError, match="a token named alice exists"):
        book.create("alice", "viewer", "root")
    with pytest.raises(ValidationError, match="role: must be one of admin, user, viewer"):
        book.create("bob", "owner", "root")
    with pytest.raises(ValidationError, match="name: must be 1-64"):
        book.create("bob@host", "user", "root")

    again = TokenBook(store, "tfc-client-token", clock)  # type: ignore[arg-type]
    await again.load()  # a restart: the same tokens
    assert again.authenticate(token).name == "alice"
    assert again.revoke("alice").revoked is True
    with pytest.raises(Unauthenticated, match=f"the token {PREFIX}{record.id} of alice was revoked"):
        again.authenticate(token)
    with pytest.raises(NotFoundError, match="no live token named 'alice'"):
        again.revoke("alice")
    assert [r.name for r in again.list()] == [] and [r.name for r in again.list(include_revoked=True)] == ["alice"]
    _, fresh = again.create("alice", "viewer", "root")  # a new token once the old one is revoked
    assert again.authenticate(fresh).role == VIEWER


def test_last_use_is_written_at_most_once_a_minute() -> None:
    store, clock = _Store(), _Clock()
    book = TokenBook(store, "", clock)  # type: ignore[arg-type]
    record, token = book.create("alice", "user", "root")
    writes = store.writes
    for _ in range(50):
        book.authenticate(token)
    assert store.writes == writes + 1 and record.last_used_at == 1000.0
    clock.now += 59
    book.authenticate(token)
    assert store.writes == writes + 1
    clock.now += 1
    book.authenticate(token)
    assert store.writes == writes + 2 and store.rows[record.id]["last_used_at"] == 1060.0
    assert "secret" not in record.public() and "hash" not in record.public()


@pytest.mark.parametrize("name", ["unknown", "system", "http", "admin", "nobody", "Unknown", " HTTP "])
def test_names_the_controller_falls_back_to_are_reserved_for_tokens_and_quotas(name: str) -> None:
    """A token named `unknown` would own every job submitted without a user, `http` the HTTP face's unnamed ones."""
    from tensorfleet_desktop.controller.quotas import Quotas

    book = TokenBook(_Store(), "", _Clock())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"name: .* is reserved \(the controller uses admin, http, nobody"):
        book.create(name, "user", "root")
    quotas = Quotas(_Store())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"user: .* is reserved .*: not a user's name"):
        quotas.set(name, tasks=1)
    assert quotas.set("unknownish", tasks=1).tasks == 1  # only the names themselves
    assert principals.submitter_for(Principal("", ADMIN), "") in principals.RESERVED_NAMES


def test_a_token_made_before_its_name_was_reserved_is_refused() -> None:
    store, clock = _Store(), _Clock()
    book = TokenBook(store, "", clock)  # type: ignore[arg-type]
    record, token = book.create("unknown2", "user", "root")
    record.name = "unknown"  # as stored by an older controller
    with pytest.raises(Unauthenticated, match=r"has a reserved name .*: revoke it"):
        book.authenticate(token)
    assert book.revoke("unknown").revoked is True
