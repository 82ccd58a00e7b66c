"""MongoDB store (pymongo): the same contract as SQLite, for a team that shares one history.

Writes go through one writer thread, like SQLite's, so the event loop never waits on the network. When
MongoDB is unreachable the writer keeps the queued writes and retries them, with a warning every few
seconds, until the server is back: running jobs go on and nothing is dropped silently. A write the
server refuses (not a connection problem) stops the store loudly, as SQLite's does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from tensorfleet_desktop.controller.model import Job, JobEventRecord
from tensorfleet_desktop.controller.store.base import JobStore, StoreFullError, redact_uri

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_EVENT_FIELDS = [f.name for f in dataclasses.fields(JobEventRecord)]
_DUPLICATE_KEY = 11000
_RETRY_WARN_EVERY = 5.0
_EVENT_BATCH = 2000

_OUT_OF_DISK_SPACE = 14031
Op = Callable[[Any], Any]  # takes the pymongo Database


def _out_of_space(exc: Exception) -> bool:
    return getattr(exc, "code", None) == _OUT_OF_DISK_SPACE or "No space left on device" in str(exc)


class _Write:
    def __init__(self, fn: Op, awaited: bool) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] | None = concurrent.futures.Future() if awaited else None


class _Events:
    """Queued events and cursors; consecutive ones are merged into one round trip."""

    def __init__(self, docs: list[dict[str, Any]], marks: dict[str, int]) -> None:
        self.docs = docs
        self.marks = marks
        self.future = None


class MongoJobStore(JobStore):
    def __init__(self, uri: str, server_timeout: float = 10.0) -> None:
        try:
            import pymongo
        except ImportError:
            raise ValueError("a mongodb:// store needs pymongo: pip install 'tensorfleet[mongo]'") from None
        self._pymongo = pymongo
        self.uri = redact_uri(uri)
        self._raw_uri = uri
        self._db_name = urlparse(uri).path.strip("/") or "tensorfleet"
        options = {k.lower(): v[-1] for k, v in parse_qs(urlparse(uri).query).items()}
        given = options.get("serverselectiontimeoutms", "")  # the URI may choose its own
        self._timeout_ms = int(given) if given.isdigit() else int(server_timeout * 1000)
        self._client: Any = None
        self._db: Any = None
        self._queue: queue.SimpleQueue[_Write | _Events | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    # ---- lifecycle

    async def open(self) -> None:
        await asyncio.to_thread(self._init)
        self._thread = threading.Thread(target=self._writer, name="mongo-writer", daemon=True)
        self._thread.start()

    def _init(self) -> None:
        pymongo = self._pymongo
        try:
            self._client = pymongo.MongoClient(
                self._raw_uri,
                serverSelectionTimeoutMS=self._timeout_ms,
                connectTimeoutMS=self._timeout_ms,
                socketTimeoutMS=max(20_000, 2 * self._timeout_ms),  # a hung server becomes an error we retry
                tz_aware=False,
            )
        except (pymongo.errors.ConfigurationError, ValueError, TypeError) as exc:  # a malformed URI
            raise ValueError(f"bad MongoDB URI {self.uri}: {redact_uri(str(exc))}") from None
        try:
            self._client.admin.command("ping")
        except pymongo.errors.OperationFailure as exc:
            raise ValueError(f"MongoDB at {self.uri} refused us: {exc.details.get('errmsg', exc)}") from None
        except pymongo.errors.PyMongoError as exc:
            reason = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0]
            raise ValueError(
                f"cannot reach MongoDB at {self.uri} within {self._timeout_ms / 1000:g}s: {reason}"
            ) from None
        db = self._db = self._client[self._db_name]
        meta = db.meta.find_one({"_id": "schema_version"})
        current = int(meta["value"]) if meta else 0
        if current > SCHEMA_VERSION:
            raise ValueError(f"{self.uri} was written by a newer TensorFleet (schema {current})")
        asc, desc = pymongo.ASCENDING, pymongo.DESCENDING
        db.jobs.create_index([("state", asc), ("created_at", desc)], name="jobs_by_state")
        db.events.create_index([("job_id", asc), ("seq", asc)], unique=True, name="events_by_job")
        db.events.create_index(
            [("attempt_id", asc), ("agent_seq", asc)],
            unique=True,
            partialFilterExpression={"attempt_id": {"$gt": ""}},
            name="events_once",
        )
        db.events.create_index([("job_id", asc), ("kind", asc), ("seq", asc)], name="events_by_kind")
        db.agents.create_index([("state", asc), ("last_seen", desc)], name="agents_by_state")
        db.models.create_index([("name", asc), ("version", asc)], unique=True, name="versions_unique")
        db.models.create_index([("algorithm", asc), ("created_at", desc)], name="models_by_algorithm")
        db.models.create_index([("metrics.test_accuracy", desc)], name="models_by_accuracy")
        db.models.create_index([("metrics.r2", desc)], name="models_by_r2")
        db.aliases.create_index([("name", asc), ("alias", asc)], unique=True, name="alias_unique")
        if current < SCHEMA_VERSION:
            log.info("MongoDB store %s: schema %d -> %d", self.uri, current, SCHEMA_VERSION)
            db.meta.update_one({"_id": "schema_version"}, {"$set": {"value": SCHEMA_VERSION}}, upsert=True)

    async def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._client is not None:
            self._client.close()

    # ---- the writer

    def _put(self, item: _Write | _Events) -> None:
        if self._failed is not None:
            raise RuntimeError(f"the store {self.uri} failed: {self._failed}") from self._failed
        self._queue.put(item)

    def _write(self, fn: Op) -> None:
        self._put(_Write(fn, awaited=False))

    async def _call(self, fn: Op) -> Any:
        item = _Write(fn, awaited=True)
        self._put(item)
        assert item.future is not None
        return await asyncio.wrap_future(item.future)

    def _writer(self) -> None:
        held: _Write | _Events | threading.Event | None = None
        while True:
            item = held if held is not None else self._queue.get()
            held = None
            if item is None:
                break
            if isinstance(item, threading.Event):
                item.set()
                continue
            if isinstance(item, _Events):
                docs, marks = list(item.docs), dict(item.marks)
                while len(docs) < _EVENT_BATCH:  # merge what is already waiting
                    try:
                        following = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(following, _Events):
                        held = following
                        break
                    docs += following.docs
                    for attempt, seq in following.marks.items():
                        marks[attempt] = max(seq, marks.get(attempt, 0))
                item = _Write(self._events_op(docs, marks), awaited=False)
            self._apply(item)

    def _apply(self, item: _Write) -> None:
        """Run one write, retrying while the server is unreachable; a refused write fails the store (or its caller)."""
        errors = self._pymongo.errors
        warned = 0.0
        while True:
            try:
                result = item.fn(self._db)
            except (errors.AutoReconnect, errors.ServerSelectionTimeoutError, errors.NetworkTimeout) as exc:
                now = time.monotonic()
                if now - warned > _RETRY_WARN_EVERY:
                    log.warning("MongoDB %s unreachable (%s); holding writes and retrying", self.uri, exc)
                    warned = now
                time.sleep(0.5)
                continue
            except errors.PyMongoError as exc:
                if _out_of_space(exc):  # the server's disk: held and retried like an outage, never a dead store
                    if item.future is not None:  # an awaited call (a submit) is refused instead of waiting
                        item.future.set_exception(StoreFullError(f"MongoDB at {self.uri} is out of disk space"))
                        return
                    now = time.monotonic()
                    if now - warned > _RETRY_WARN_EVERY:
                        log.error("MongoDB %s is out of disk space (%s); holding writes and retrying", self.uri, exc)
                        warned = now
                    time.sleep(1.0)
                    continue
                if item.future is not None:  # an awaited call: its caller gets the error
                    item.future.set_exception(exc)
                    return
                log.critical("store write failed, the controller can no longer save: %s", exc)
                self._failed = exc
                return
            if item.future is not None:
                item.future.set_result(result)
            if warned:
                log.warning("MongoDB %s is back; queued writes resumed", self.uri)
            return

    async def insert_job(self, job: Job) -> None:
        doc = {"_id": job.id, "state": job.state.value, "created_at": job.created_at, "job": job.to_dict()}
        await self._call(lambda db: db.jobs.replace_one({"_id": job.id}, doc, upsert=True))

    def _events_op(self, docs: list[dict[str, Any]], marks: dict[str, int]) -> Op:
        pymongo = self._pymongo

        def op(db: Any) -> None:
            if docs:
                try:
                    db.events.insert_many(docs, ordered=False)
                except pymongo.errors.BulkWriteError as exc:
                    real = [e for e in exc.details.get("writeErrors", []) if e.get("code") != _DUPLICATE_KEY]
                    if real:
                        raise
            if marks:
                db.cursors.bulk_write(
                    [pymongo.UpdateOne({"_id": a}, {"$max": {"seq": seq}}, upsert=True) for a, seq in marks.items()],
                    ordered=False,
                )

        return op

    async def flush(self) -> None:
        done = threading.Event()
        self._queue.put(done)
        await asyncio.to_thread(done.wait)
        if self._failed is not None:
            raise RuntimeError(f"the store {self.uri} failed: {self._failed}")

    async def _read(self, fn: Op) -> Any:
        return await asyncio.to_thread(fn, self._db)

    # ---- jobs, events, agents, datasets

    def save_job(self, job: Job) -> None:
        doc = {"_id": job.id, "state": job.state.value, "created_at": job.created_at, "job": job.to_dict()}
        self._write(lambda db: db.jobs.replace_one({"_id": job.id}, doc, upsert=True))

    def append_events(self, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        self._put(_Events([{k: getattr(e, k) for k in _EVENT_FIELDS} for e in events], dict(cursors)))

    def save_agent(self, node_id: str, body: dict[str, Any]) -> None:
        doc = {"_id": node_id, "state": body.get("state", ""), "last_seen": body.get("last_seen", 0.0), "body": body}
        self._write(lambda db: db.agents.replace_one({"_id": node_id}, doc, upsert=True))

    def delete_agent(self, node_id: str) -> None:
        self._write(lambda db: db.agents.delete_one({"_id": node_id}))

    def save_dataset(self, name: str, body: dict[str, Any]) -> None:
        self._write(lambda db: db.datasets.replace_one({"_id": name}, {"_id": name, "body": body}, upsert=True))

    def delete_dataset(self, name: str) -> None:
        self._write(lambda db: db.datasets.delete_one({"_id": name}))

    async def load_datasets(self) -> dict[str, dict[str, Any]]:
        rows = await self._read(lambda db: list(db.datasets.find()))
        return {row["_id"]: row["body"] for row in rows}

    async def load_jobs(self) -> list[Job]:
        def read(db: Any) -> list[Job]:
            cursors = {c["_id"]: int(c["seq"]) for c in db.cursors.find()}
            last = {
                g["_id"]: int(g["m"])
                for g in db.events.aggregate([{"$group": {"_id": "$job_id", "m": {"$max": "$seq"}}}])
            }
            jobs = []
            for doc in db.jobs.find().sort("created_at", 1):
                job = Job.from_dict(doc["job"])
                job.last_event_seq = max(job.last_event_seq, last.get(job.id, 0))
                for task in job.tasks:
                    task.cursor = max(task.cursor, cursors.get(task.agent_task_id, 0))
                jobs.append(job)
            return jobs

        result: list[Job] = await self._read(read)
        return result

    async def load_agents(self) -> dict[str, dict[str, Any]]:
        rows = await self._read(lambda db: list(db.agents.find()))
        return {row["_id"]: row["body"] for row in rows}

    async def events(
        self, job_id: str, after_seq: int = 0, kinds: tuple[str, ...] = (), task_index: int | None = None
    ) -> list[JobEventRecord]:
        query: dict[str, Any] = {"job_id": job_id, "seq": {"$gt": after_seq}}
        if kinds:
            query["kind"] = {"$in": list(kinds)}
        if task_index is not None:
            query["task_index"] = task_index
        rows = await self._read(lambda db: list(db.events.find(query, {"_id": 0}).sort("seq", 1)))
        return [JobEventRecord(**{k: row[k] for k in _EVENT_FIELDS if k in row}) for row in rows]

    # ---- model registry

    async def register_model(self, record: dict[str, Any]) -> dict[str, Any]:
        pymongo = self._pymongo

        def op(db: Any) -> dict[str, Any]:
            counter = db.model_names.find_one_and_update(
                {"_id": record["name"]},
                {"$inc": {"last_version": 1}},
                upsert=True,
                return_document=pymongo.ReturnDocument.AFTER,
            )
            stored = {**record, "version": int(counter["last_version"])}
            db.models.insert_one(dict(stored))
            return stored

        result: dict[str, Any] = await self._call(op)
        return {**result, "aliases": []}

    async def put_model_version(self, record: dict[str, Any]) -> bool:
        body = {k: v for k, v in record.items() if k != "aliases"}
        errors = self._pymongo.errors

        def op(db: Any) -> bool:
            try:
                db.models.insert_one(dict(body))
            except errors.DuplicateKeyError:
                return False
            db.model_names.update_one(
                {"_id": body["name"]}, {"$max": {"last_version": int(body["version"])}}, upsert=True
            )
            return True

        result: bool = await self._call(op)
        return result

    def _with_aliases(self, db: Any, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = list({d["name"] for d in docs})
        aliases: dict[tuple[str, int], list[str]] = {}
        for a in db.aliases.find({"name": {"$in": names}}).sort("alias", 1):
            aliases.setdefault((a["name"], a["version"]), []).append(a["alias"])
        return [{**d, "aliases": aliases.get((d["name"], d["version"]), [])} for d in docs]

    async def model_versions(self, name: str = "", algorithm: str = "") -> list[dict[str, Any]]:
        query = {k: v for k, v in (("name", name), ("algorithm", algorithm)) if v}

        def read(db: Any) -> list[dict[str, Any]]:
            docs = list(db.models.find(query, {"_id": 0}).sort([("created_at", -1), ("name", 1), ("version", -1)]))
            return self._with_aliases(db, docs)

        result: list[dict[str, Any]] = await self._read(read)
        return result

    async def get_model(self, name: str, version: int) -> dict[str, Any] | None:
        def read(db: Any) -> dict[str, Any] | None:
            doc = db.models.find_one({"name": name, "version": version}, {"_id": 0})
            return self._with_aliases(db, [doc])[0] if doc else None

        result: dict[str, Any] | None = await self._read(read)
        return result

    async def update_model(self, name: str, version: int, fields: dict[str, Any]) -> bool:
        def op(db: Any) -> bool:
            return bool(db.models.update_one({"name": name, "version": version}, {"$set": fields}).matched_count)

        result: bool = await self._call(op)
        return result

    async def set_alias(self, name: str, alias: str, version: int) -> bool:
        def op(db: Any) -> bool:
            if db.models.find_one({"name": name, "version": version}, {"_id": 1}) is None:
                return False
            db.aliases.update_one({"name": name, "alias": alias}, {"$set": {"version": version}}, upsert=True)
            return True

        result: bool = await self._call(op)
        return result

    async def remove_alias(self, name: str, alias: str) -> bool:
        result: bool = await self._call(
            lambda db: db.aliases.delete_one({"name": name, "alias": alias}).deleted_count > 0
        )
        return result

    async def delete_model(self, name: str, version: int) -> bool:
        def op(db: Any) -> bool:
            db.aliases.delete_many({"name": name, "version": version})
            return bool(db.models.delete_one({"name": name, "version": version}).deleted_count)

        result: bool = await self._call(op)
        return result
