"""Issue 24 on every store backend: the audit log's seq keeps increasing across a restart (a reopened store), its
filters, and named tokens surviving a restart hashed (SQLite; MongoDB through a SecantusDB server process)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tensorfleet_desktop.controller.audit import AuditLog
from tensorfleet_desktop.controller.principals import ADMIN, USER, VIEWER, Principal
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.tokens import TokenBook


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.slow)])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tf.db'}"
    return f"{request.getfixturevalue('mongo_uri')}/tf_{uuid.uuid4().hex[:12]}"


async def test_audit_seq_and_tokens_survive_a_restart(store_uri: str) -> None:
    alice, root = Principal("alice", USER, True), Principal("root", ADMIN)
    clock = iter(float(t) for t in range(100, 200))
    store = open_store(store_uri)
    await store.open()
    audit, book = AuditLog(store, lambda: next(clock)), TokenBook(store, "tfc-x")
    await audit.load()
    _, token = book.create("bob", VIEWER, "root")
    audit.record(root, "token_create", "bob")
    audit.record(alice, "submit", "j1")
    audit.record(alice, "cancel", "j2", "job j2 belongs to carol", ok=False)
    seen = await audit.entries()  # read at once: what was recorded is there (the queue is flushed first)
    assert [(e["seq"], e["action"], e["ok"]) for e in seen] == [
        (3, "cancel", False),
        (2, "submit", True),
        (1, "token_create", True),
    ]
    await store.close()

    store = open_store(store_uri)  # a restart
    await store.open()
    try:
        audit, book = AuditLog(store, lambda: next(clock)), TokenBook(store, "tfc-x")
        await audit.load()
        await book.load()
        assert book.authenticate(token) == Principal("bob", VIEWER, True)
        assert audit.record(root, "token_revoke", "bob")["seq"] == 4  # after the last stored, never again 1
        book.revoke("bob")
        assert [e["seq"] for e in await audit.entries()] == [4, 3, 2, 1]
        assert [e["target"] for e in await audit.entries(user="alice")] == ["j2", "j1"]
        assert [e["seq"] for e in await audit.entries(action="submit")] == [2]
        assert [e["seq"] for e in await audit.entries(since=102.0)] == [4, 3]
        assert [e["seq"] for e in await audit.entries(limit=1)] == [4]
        assert (await audit.entries(action="cancel"))[0]["detail"] == "job j2 belongs to carol"
        await store.flush()
        again = TokenBook(store, "tfc-x")
        await again.load()
        assert again.list() == [] and again.list(include_revoked=True)[0].revoked
    finally:
        await store.close()
