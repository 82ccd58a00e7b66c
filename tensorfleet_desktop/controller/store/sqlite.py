"""SQLite store: WAL, one writer thread, batched commits, idempotent event inserts (DESIGN decision 7)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorfleet_desktop.controller.model import Job, JobEventRecord
from tensorfleet_desktop.controller.store.base import JobStore, StoreFullError, full_message

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
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
)
_BATCH_WINDOW = 0.05  # seconds the writer keeps collecting after the first queued write (<= 100 ms)
_EVENT_FIELDS = [f.name for f in dataclasses.fields(JobEventRecord)]
_BODY_FIELDS = [
    f for f in _EVENT_FIELDS if f not in ("job_id", "seq", "time", "kind", "task_index", "attempt_id", "agent_seq")
]

_RETRY_FIRST, _RETRY_MAX = 0.5, 10.0  # seconds between attempts to commit held writes, doubling
_AGAIN = threading.Event()  # the writer's own wake-up: retry what is held
# SQLite's answers when a write cannot reach the disk (full, quota, or an I/O error writing the WAL or its index)
_NO_SPACE_CODES = ("SQLITE_FULL", "SQLITE_IOERR")

Op = Callable[[sqlite3.Connection], None]


def _no_space(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    return any(name.startswith(code) for code in _NO_SPACE_CODES) or "disk is full" in str(exc)


class _Call:
    """A write whose result someone awaits; runs inside the batch's transaction under its own savepoint,
    so that its failure never undoes the other writes of the batch."""

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.result: Any = None
        self.error: BaseException | None = None

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute("SAVEPOINT call")
        try:
            self.result = self.fn(conn)
        except sqlite3.Error as exc:
            if _no_space(exc):
                raise  # the whole batch waits for space
            conn.execute("ROLLBACK TO call")
            self.error = exc
        conn.execute("RELEASE call")


def _statement(sql: str, args: tuple[Any, ...]) -> Op:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute(sql, args)

    return op


class SqliteJobStore(JobStore):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.uri = f"sqlite://{path}" if path.is_absolute() else f"sqlite:{path}"  # as open_store() reads it
        self._queue: queue.SimpleQueue[Op | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._full: StoreFullError | None = None  # set while writes wait for space
        self._dir = path.parent

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def open(self) -> None:
        await asyncio.to_thread(self._init)
        self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
        self._thread.start()

    def _init(self) -> None:
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

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # ---- writes (queued)

    def _put(self, op: Op) -> None:
        if self._failed is not None:
            raise RuntimeError(f"the store {self.uri} failed: {self._failed}") from self._failed
        self._queue.put(op)

    def save_job(self, job: Job) -> None:
        body = json.dumps(job.to_dict())
        row = (job.id, job.state.value, job.created_at, body)
        self._put(_statement("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)", row))

    def append_events(self, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        rows = [
            (
                e.job_id,
                e.seq,
                e.time,
                e.kind,
                e.task_index,
                e.attempt_id,
                e.agent_seq,
                json.dumps({k: getattr(e, k) for k in _BODY_FIELDS}),
            )
            for e in events
        ]
        marks = list(cursors.items())

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT INTO cursors VALUES (?, ?) ON CONFLICT(attempt_id) DO UPDATE SET seq=max(seq, excluded.seq)",
                marks,
            )

        self._put(op)

    def save_agent(self, node_id: str, body: dict[str, Any]) -> None:
        row = (node_id, json.dumps(body))
        self._put(_statement("INSERT OR REPLACE INTO agents VALUES (?, ?)", row))

    def delete_agent(self, node_id: str) -> None:
        self._put(_statement("DELETE FROM agents WHERE node_id = ?", (node_id,)))

    def save_dataset(self, name: str, body: dict[str, Any]) -> None:
        self._put(_statement("INSERT OR REPLACE INTO datasets VALUES (?, ?)", (name, json.dumps(body))))

    def delete_dataset(self, name: str) -> None:
        self._put(_statement("DELETE FROM datasets WHERE name = ?", (name,)))

    async def load_datasets(self) -> dict[str, dict[str, Any]]:
        rows = await asyncio.to_thread(self._read, lambda c: c.execute("SELECT name, body FROM datasets").fetchall())
        return {name: json.loads(body) for name, body in rows}

    async def flush(self) -> None:
        done = threading.Event()
        self._queue.put(done)
        await asyncio.to_thread(done.wait)
        if self._failed is not None:
            raise RuntimeError(f"the store {self.uri} failed: {self._failed}")
        if self._full is not None:
            raise StoreFullError(full_message(self._dir))

    async def insert_job(self, job: Job) -> None:
        row = (job.id, job.state.value, job.created_at, json.dumps(job.to_dict()))

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO jobs VALUES (?, ?, ?, ?)", row)

        await self._call(op)

    def _writer(self) -> None:
        conn = self._connect()
        held: list[Op] = []  # writes that could not be committed for lack of space, retried before anything newer
        delay = _RETRY_FIRST
        try:
            while True:
                try:
                    first = self._queue.get(timeout=delay if held else None)
                except queue.Empty:
                    first = _AGAIN
                stop = first is None
                batch: list[Op | threading.Event] = []
                if first is not None and first is not _AGAIN:
                    batch.append(first)
                    deadline = time.monotonic() + _BATCH_WINDOW
                    while (left := deadline - time.monotonic()) > 0:
                        try:
                            item = self._queue.get(timeout=left)
                        except queue.Empty:
                            break
                        if item is None:
                            stop = True
                            break
                        batch.append(item)
                        if isinstance(item, threading.Event | _Call):
                            break  # someone waits: commit now
                held = self._commit(conn, [*held, *batch])
                delay = min(_RETRY_MAX, delay * 2) if held else _RETRY_FIRST
                if stop:
                    if held:
                        log.critical("store %s: %d write(s) lost: %s", self.uri, len(held), full_message(self._dir))
                    break
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Op | threading.Event]) -> list[Op]:
        """Commit the batch; returns the writes to retry when it failed for lack of space (their callers, if
        any, are told at once: an awaited write is not held)."""
        waiters = [item for item in batch if isinstance(item, threading.Event)]
        calls = [item for item in batch if isinstance(item, _Call)]
        held: list[Op] = []
        try:
            with conn:
                for item in batch:
                    if not isinstance(item, threading.Event):
                        item(conn)
        except sqlite3.Error as exc:
            if _no_space(exc):
                held = [item for item in batch if not isinstance(item, threading.Event | _Call)]
                if self._full is None:
                    log.error(
                        "store %s cannot save (%s): holding %d write(s) until there is space", self.uri, exc, len(held)
                    )
                self._full = StoreFullError(full_message(self._dir))
                for call in calls:
                    call.error = self._full
            else:
                log.critical("store write failed, the controller can no longer save: %s", exc)
                self._failed = exc
        else:
            if self._full is not None:
                log.warning("store %s: space again, held writes saved", self.uri)
            self._full = None
        for waiter in waiters:
            waiter.set()
        for call in calls:
            if self._failed is not None or call.error is not None:
                call.future.set_exception(call.error or RuntimeError(f"the store {self.uri} failed: {self._failed}"))
            else:
                call.future.set_result(call.result)
        return held

    async def _call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        call = _Call(fn)
        self._put(call)
        return await asyncio.wrap_future(call.future)

    # ---- reads (threads, own connections)

    def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._connect()
        try:
            return fn(conn)
        finally:
            conn.close()

    async def load_jobs(self) -> list[Job]:
        def read(conn: sqlite3.Connection) -> list[Job]:
            cursors = dict(conn.execute("SELECT attempt_id, seq FROM cursors").fetchall())
            last = dict(conn.execute("SELECT job_id, max(seq) FROM events GROUP BY job_id").fetchall())
            jobs = []
            for (body,) in conn.execute("SELECT body FROM jobs ORDER BY created_at"):
                job = Job.from_dict(json.loads(body))
                job.last_event_seq = max(job.last_event_seq, int(last.get(job.id, 0)))
                for task in job.tasks:
                    task.cursor = max(task.cursor, int(cursors.get(task.agent_task_id, 0)))
                jobs.append(job)
            return jobs

        result: list[Job] = await asyncio.to_thread(self._read, read)
        return result

    async def load_agents(self) -> dict[str, dict[str, Any]]:
        rows = await asyncio.to_thread(self._read, lambda c: c.execute("SELECT node_id, body FROM agents").fetchall())
        return {node_id: json.loads(body) for node_id, body in rows}

    async def events(
        self, job_id: str, after_seq: int = 0, kinds: tuple[str, ...] = (), task_index: int | None = None
    ) -> list[JobEventRecord]:
        sql = (
            "SELECT job_id, seq, time, kind, task_index, attempt_id, agent_seq, body FROM events "
            "WHERE job_id = ? AND seq > ?"
        )
        args: list[Any] = [job_id, after_seq]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        if task_index is not None:
            sql += " AND task_index = ?"
            args.append(task_index)
        sql += " ORDER BY seq"
        rows = await asyncio.to_thread(self._read, lambda c: c.execute(sql, args).fetchall())
        out = []
        for job, seq, t, kind, index, attempt, agent_seq, body in rows:
            out.append(
                JobEventRecord(
                    job_id=job,
                    seq=seq,
                    time=t,
                    kind=kind,
                    task_index=index,
                    attempt_id=attempt,
                    agent_seq=agent_seq,
                    **json.loads(body),
                )
            )
        return out

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

        result: dict[str, Any] = await self._call(op)
        return {**result, "aliases": []}

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

        result: bool = await self._call(op)
        return result

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

        result: list[dict[str, Any]] = await asyncio.to_thread(self._read, read)
        return result

    async def get_model(self, name: str, version: int) -> dict[str, Any] | None:
        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT body FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
            if row is None:
                return None
            aliases = conn.execute(
                "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", (name, version)
            ).fetchall()
            return {**json.loads(row[0]), "aliases": [a for (a,) in aliases]}

        result: dict[str, Any] | None = await asyncio.to_thread(self._read, read)
        return result

    async def update_model(self, name: str, version: int, fields: dict[str, Any]) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT body FROM models WHERE name = ? AND version = ?", (name, version)).fetchone()
            if row is None:
                return False
            body = json.dumps({**json.loads(row[0]), **fields})
            conn.execute("UPDATE models SET body = ? WHERE name = ? AND version = ?", (body, name, version))
            return True

        result: bool = await self._call(op)
        return result

    async def set_alias(self, name: str, alias: str, version: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM models WHERE name = ? AND version = ?", (name, version)).fetchone() is None:
                return False
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, alias, version))
            return True

        result: bool = await self._call(op)
        return result

    async def remove_alias(self, name: str, alias: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)).rowcount > 0

        result: bool = await self._call(op)
        return result

    async def delete_model(self, name: str, version: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, version))
            return conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version)).rowcount > 0

        result: bool = await self._call(op)
        return result
