"""SQLite store: WAL, one writer thread (store/engine.py), idempotent event inserts (docs/architecture.md,
'Nothing is lost')."""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tensorfleet_desktop.controller.model import JobEventRecord
from tensorfleet_desktop.controller.store.base import full_message
from tensorfleet_desktop.controller.store.engine import EVENT_FIELDS, JobWrite, QueuedStore, Table

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 5
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, created_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, kind TEXT NOT NULL,
    task_index INTEGER NOT NULL, attempt_id TEXT NOT NULL, agent_seq INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (job_id, seq));
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events(attempt_id, agent_seq) WHERE attempt_id != '';
CREATE INDEX IF NOT EXISTS events_by_kind ON events(job_id, kind, seq);
CREATE TABLE IF NOT EXISTS cursors (attempt_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS agents (node_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dataset_versions (ref TEXT PRIMARY KEY, body TEXT NOT NULL);
"""
# Each migration takes the database from version N-1 to N (index N-2); applied in order on open.
_MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS models (
        name TEXT NOT NULL, version INTEGER NOT NULL, algorithm TEXT NOT NULL, created_at REAL NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (name, version));
    CREATE INDEX IF NOT EXISTS models_by_algorithm ON models(algorithm, created_at);
    CREATE TABLE IF NOT EXISTS aliases (
        name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (name, alias));
    CREATE TABLE IF NOT EXISTS model_names (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
    """,
    # a job's tasks and artifacts in rows of their own, written when they change (a job body from before keeps
    # them inside until its next save)
    """
    CREATE TABLE IF NOT EXISTS job_tasks (
        job_id TEXT NOT NULL, idx INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (job_id, idx));
    CREATE TABLE IF NOT EXISTS job_artifacts (
        job_id TEXT NOT NULL, pos INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (job_id, pos));
    """,
    # pools (issue 25): a Slurm pool's settings, by name
    """
    CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, body TEXT NOT NULL);
    """,
    # the team (issue 24): named tokens (hashed), quotas and decayed usage; the audit log
    """
    CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS quotas (user TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS usage (user TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, time REAL NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL, body TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS audit_by_user ON audit(user, seq);
    CREATE INDEX IF NOT EXISTS audit_by_action ON audit(action, seq);
    """,
)
# The events table's columns (what is indexed); the other fields of an event go in its JSON body.
EVENT_COLUMNS = ("job_id", "seq", "time", "kind", "task_index", "attempt_id", "agent_seq")
_KEYS: dict[Table, str] = {
    "agents": "node_id",
    "datasets": "name",
    "dataset_versions": "ref",
    "pools": "name",
    "tokens": "id",
    "quotas": "user",
    "usage": "user",
}
# A job's row and its task rows are updated where they are (an upsert), not deleted and inserted again at a new rowid
# as INSERT OR REPLACE did: a job saved 3 times in its life dirtied the pages of both places each time (and of the
# table's end), pages every commit writes to the WAL
_INSERT_JOB = "INSERT INTO jobs VALUES (?, ?, ?, ?)"
_UPSERT_JOB = (
    "INSERT INTO jobs VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
    "SET state = excluded.state, created_at = excluded.created_at, body = excluded.body"
)
_UPSERT_TASK = "INSERT INTO job_tasks VALUES (?, ?, ?) ON CONFLICT(job_id, idx) DO UPDATE SET body = excluded.body"
# SQLite's answers when a write cannot reach the disk (full, quota, or an I/O error writing the WAL or its index)
_NO_SPACE_CODES = ("SQLITE_FULL", "SQLITE_IOERR")


_BODY_FIELDS = tuple(name for name in EVENT_FIELDS if name not in EVENT_COLUMNS)
_columns_of, _body_of = operator.attrgetter(*EVENT_COLUMNS), operator.attrgetter(*_BODY_FIELDS)
_encode = json.JSONEncoder().encode  # json.dumps's own default encoder, without its per-call checks


def record_values(event: JobEventRecord) -> tuple[Any, ...]:
    """An event as the events table's values: its columns, then the rest of engine.event_row's fields as the JSON
    body, read straight from the record (a row dict in between was half the writer's time per event)."""
    return (*_columns_of(event), _encode(dict(zip(_BODY_FIELDS, _body_of(event), strict=True))))


class SqliteJobStore(QueuedStore[sqlite3.Connection]):
    atomic = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.uri = f"sqlite://{path}" if path.is_absolute() else f"sqlite:{path}"  # as open_store() reads it

    # ---- the engine's hooks

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row is not None else 1
            if current > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer TensorFleet (schema {current})")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                if row is not None:  # a fresh database is simply created at the latest schema
                    log.info("migrating %s to schema %d", self.path, version)
                conn.executescript(_MIGRATIONS[version - 2])
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.commit()
        finally:
            conn.close()

    def _disconnect(self, conn: sqlite3.Connection) -> None:
        conn.close()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:  # a connection per read: WAL readers never block the writer
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN")
        with conn:  # commits, or rolls back on an exception
            yield

    def _isolated(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("SAVEPOINT call")
        try:
            result = fn(conn)
        except Exception as exc:
            if not self._no_space(exc):  # lack of space has undone the whole transaction already
                conn.execute("ROLLBACK TO call")
                conn.execute("RELEASE call")
            raise
        conn.execute("RELEASE call")
        return result

    def _no_space(self, exc: Exception) -> bool:
        if not isinstance(exc, sqlite3.Error):
            return False
        name = getattr(exc, "sqlite_errorname", "")
        return any(name.startswith(code) for code in _NO_SPACE_CODES) or "disk is full" in str(exc)

    def _full_message(self) -> str:
        return full_message(self.path.parent)

    def _write_job(self, conn: sqlite3.Connection, write: JobWrite, new: bool) -> None:
        body, job_id = write.summary, write.job_id
        # first: a new job's id already stored is refused before anything else is written
        conn.execute(_INSERT_JOB if new else _UPSERT_JOB, (job_id, body["state"], body["created_at"], json.dumps(body)))
        if write.task_count is not None:
            conn.execute("DELETE FROM job_tasks WHERE job_id = ? AND idx >= ?", (job_id, write.task_count))
        conn.executemany(_UPSERT_TASK, [(job_id, i, json.dumps(t)) for i, t in write.tasks])
        start = write.artifacts_from
        if write.artifacts_all:
            conn.execute(
                "DELETE FROM job_artifacts WHERE job_id = ? AND pos >= ?", (job_id, start + len(write.artifacts))
            )
        conn.executemany(
            "INSERT OR REPLACE INTO job_artifacts VALUES (?, ?, ?)",
            [(job_id, start + k, json.dumps(a)) for k, a in enumerate(write.artifacts)],
        )

    def _delete_job(self, conn: sqlite3.Connection, job_id: str) -> None:
        conn.execute(
            "DELETE FROM cursors WHERE attempt_id IN "
            "(SELECT DISTINCT attempt_id FROM events WHERE job_id = ? AND attempt_id != '')",
            (job_id,),
        )
        conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
        conn.execute("DELETE FROM job_tasks WHERE job_id = ?", (job_id,))
        conn.execute("DELETE FROM job_artifacts WHERE job_id = ?", (job_id,))
        conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _write_events(self, conn: sqlite3.Connection, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", map(record_values, events))
        conn.executemany(
            "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(attempt_id) DO UPDATE SET seq=max(seq, excluded.seq)",
            cursors.items(),
        )

    def _write_body(self, conn: sqlite3.Connection, table: Table, key: str, body: dict[str, Any] | None) -> None:
        if body is None:
            conn.execute(f"DELETE FROM {table} WHERE {_KEYS[table]} = ?", (key,))
        else:
            conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, json.dumps(body)))

    def _read_jobs(self, conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
        cursors = {attempt: int(seq) for attempt, seq in conn.execute("SELECT attempt_id, seq FROM cursors")}
        last = {job: int(seq) for job, seq in conn.execute("SELECT job_id, max(seq) FROM events GROUP BY job_id")}
        tasks: dict[str, list[dict[str, Any]]] = {}
        for job_id, body in conn.execute("SELECT job_id, body FROM job_tasks ORDER BY job_id, idx"):
            tasks.setdefault(job_id, []).append(json.loads(body))
        artifacts: dict[str, list[dict[str, Any]]] = {}
        for job_id, body in conn.execute("SELECT job_id, body FROM job_artifacts ORDER BY job_id, pos"):
            artifacts.setdefault(job_id, []).append(json.loads(body))
        bodies = []
        for (text,) in conn.execute("SELECT body FROM jobs ORDER BY created_at"):
            body = json.loads(text)
            if "tasks" not in body:  # saved since schema 3; before, the body held them
                body["tasks"], body["artifacts"] = tasks.get(body["id"], []), artifacts.get(body["id"], [])
            bodies.append(body)
        return bodies, last, cursors

    def _write_audit(self, conn: sqlite3.Connection, entry: dict[str, Any]) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO audit VALUES (?, ?, ?, ?, ?)",
            (int(entry["seq"]), float(entry["time"]), str(entry["user"]), str(entry["action"]), json.dumps(entry)),
        )

    def _read_audit(
        self, conn: sqlite3.Connection, user: str, action: str, since: float, limit: int
    ) -> list[dict[str, Any]]:
        sql, args = "SELECT body FROM audit WHERE time >= ?", [float(since)]
        if user:
            sql += " AND user = ?"
        if action:
            sql += " AND action = ?"
        values = (*args, *(v for v in (user, action) if v), limit)
        rows = conn.execute(sql + " ORDER BY seq DESC LIMIT ?", values)
        return [json.loads(body) for (body,) in rows]

    def _last_audit_seq(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0])

    def _read_bodies(self, conn: sqlite3.Connection, table: Table) -> dict[str, dict[str, Any]]:
        return {key: json.loads(body) for key, body in conn.execute(f"SELECT {_KEYS[table]}, body FROM {table}")}

    def _read_events(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        after_seq: int,
        kinds: tuple[str, ...],
        task_index: int | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(EVENT_COLUMNS)}, body FROM events WHERE job_id = ? AND seq > ?"
        args: list[Any] = [job_id, after_seq]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        if task_index is not None:
            sql += " AND task_index = ?"
            args.append(task_index)
        sql += " ORDER BY seq"  # the primary key (job_id, seq): an index walk from after_seq, no sort
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        rows = conn.execute(sql, args)
        return [{**json.loads(body), **dict(zip(EVENT_COLUMNS, values, strict=True))} for *values, body in rows]

    # ---- model registry

    async def register_model(self, record: dict[str, Any]) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            conn.execute(  # a counter per name: versions of deleted models are never handed out again
                "INSERT INTO model_names VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET last_version = last_version + 1",
                (record["name"],),
            )
            (latest,) = conn.execute(
                "SELECT last_version FROM model_names WHERE name = ?", (record["name"],)
            ).fetchone()
            stored = {**record, "version": int(latest)}
            conn.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                (stored["name"], stored["version"], stored["algorithm"], stored["created_at"], json.dumps(stored)),
            )
            return stored

        return {**await self._call(op), "aliases": []}

    async def put_model_version(self, record: dict[str, Any]) -> bool:
        body = {k: v for k, v in record.items() if k != "aliases"}

        def op(conn: sqlite3.Connection) -> bool:
            name, version = body["name"], int(body["version"])
            if conn.execute("SELECT 1 FROM models WHERE name = ? AND version = ?", (name, version)).fetchone():
                return False
            conn.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                (name, version, body["algorithm"], body["created_at"], json.dumps(body)),
            )
            conn.execute(
                "INSERT INTO model_names VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET last_version = max(last_version, excluded.last_version)",
                (name, version),
            )
            return True

        return await self._call(op)

    async def model_versions(self, name: str = "", algorithm: str = "") -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sql, args = "SELECT body FROM models WHERE 1=1", list[str]()
            if name:
                sql, args = sql + " AND name = ?", [*args, name]
            if algorithm:
                sql, args = sql + " AND algorithm = ?", [*args, algorithm]
            rows = conn.execute(sql + " ORDER BY created_at DESC, name, version DESC", args).fetchall()
            aliases: dict[tuple[str, int], list[str]] = {}
            for n, alias, version in conn.execute("SELECT name, alias, version FROM aliases ORDER BY alias"):
                aliases.setdefault((n, version), []).append(alias)
            out = []
            for (body,) in rows:
                record = json.loads(body)
                out.append({**record, "aliases": aliases.get((record["name"], record["version"]), [])})
            return out

        return await self._read(read)

    async def get_model(self, name: str, version: int) -> dict[str, Any] | None:
        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT body FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
            if row is None:
                return None
            aliases = conn.execute(
                "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", (name, version)
            ).fetchall()
            record: dict[str, Any] = json.loads(row[0])
            return {**record, "aliases": [a for (a,) in aliases]}

        return await self._read(read)

    async def update_model(self, name: str, version: int, fields: dict[str, Any]) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT body FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
            if row is None:
                return False
            body = json.dumps({**json.loads(row[0]), **fields})
            conn.execute("UPDATE models SET body = ? WHERE name = ? AND version = ?", (body, name, version))
            return True

        return await self._call(op)

    async def set_alias(self, name: str, alias: str, version: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM models WHERE name = ? AND version = ?", (name, version)).fetchone() is None:
                return False
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version))
            return True

        return await self._call(op)

    async def remove_alias(self, name: str, alias: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)).rowcount > 0

        return await self._call(op)

    async def delete_model(self, name: str, version: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, version))
            return conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version)).rowcount > 0

        return await self._call(op)
