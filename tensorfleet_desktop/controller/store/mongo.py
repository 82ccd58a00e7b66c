"""MongoDB store (pymongo): the same contract as SQLite, for a team that shares one history.

Writes go through the writer thread of store/engine.py, like SQLite's. MongoDB has no transaction here (a
standalone server has none): a group's writes go in one by one, events in one bulk insert before their
cursors, and every write is safe to repeat, so a retry after an outage redoes nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from tensorfleet_desktop.controller.model import JobEventRecord
from tensorfleet_desktop.controller.store.base import redact_uri
from tensorfleet_desktop.controller.store.engine import JobWrite, QueuedStore, Table, event_row

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 3  # 3: a job's tasks and artifacts in documents of their own
_DUPLICATE_KEY = 11000
_OUT_OF_DISK_SPACE = 14031


def driver() -> Any:
    """The pymongo module; a ValueError saying how to install it when it is missing."""
    try:
        import pymongo
    except ImportError:
        raise ValueError("a mongodb:// store needs pymongo: pip install 'tensorfleet[mongo]'") from None
    return pymongo


def connect(uri: str, timeout_ms: int) -> Any:
    """A pymongo client whose server has answered; otherwise a ValueError that shows the URI without its password."""
    pymongo = driver()
    shown = redact_uri(uri)
    try:
        client = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(20_000, 2 * timeout_ms),  # a hung server becomes an error the writer retries
            tz_aware=False,
        )
    except (pymongo.errors.ConfigurationError, ValueError, TypeError) as exc:  # a malformed URI
        raise ValueError(f"bad MongoDB URI {shown}: {redact_uri(str(exc))}") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.OperationFailure as exc:
        client.close()
        raise ValueError(f"MongoDB at {shown} refused us: {exc.details.get('errmsg', exc)}") from None
    except pymongo.errors.PyMongoError as exc:
        client.close()
        reason = redact_uri(str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0])
        raise ValueError(f"cannot reach MongoDB at {shown} within {timeout_ms / 1000:g}s: {reason}") from None
    return client


class MongoJobStore(QueuedStore[Any]):  # the pymongo Database: pymongo ships no types
    atomic = False

    def __init__(self, uri: str, server_timeout: float = 10.0) -> None:
        super().__init__()
        self._pymongo = driver()
        self.uri = redact_uri(uri)
        self._raw_uri = uri
        self._db_name = urlparse(uri).path.strip("/") or "tensorfleet"
        options = {k.lower(): v[-1] for k, v in parse_qs(urlparse(uri).query).items()}
        given = options.get("serverselectiontimeoutms", "")  # the URI may choose its own
        self._timeout_ms = int(given) if given.isdigit() else int(server_timeout * 1000)
        self._client: Any = None
        self._db: Any = None

    async def close(self) -> None:
        await super().close()
        if self._client is not None:
            self._client.close()

    # ---- the engine's hooks

    def _prepare(self) -> None:
        self._client = connect(self._raw_uri, self._timeout_ms)
        db = self._db = self._client[self._db_name]
        meta = db.meta.find_one({"_id": "schema_version"})
        current = int(meta["value"]) if meta else 0
        if current > SCHEMA_VERSION:
            raise ValueError(f"{self.uri} was written by a newer TensorFleet (schema {current})")
        asc, desc = self._pymongo.ASCENDING, self._pymongo.DESCENDING
        db.jobs.create_index([("state", asc), ("created_at", desc)], name="jobs_by_state")
        db.events.create_index([("job_id", asc), ("seq", asc)], unique=True, name="events_by_job")
        db.events.create_index(
            [("attempt_id", asc), ("agent_seq", asc)],
            unique=True,
            partialFilterExpression={"attempt_id": {"$gt": ""}},
            name="events_once",
        )
        db.events.create_index([("job_id", asc), ("kind", asc), ("seq", asc)], name="events_by_kind")
        db.job_tasks.create_index([("job_id", asc), ("idx", asc)], name="tasks_by_job")
        db.job_artifacts.create_index([("job_id", asc), ("pos", asc)], name="artifacts_by_job")
        db.models.create_index([("name", asc), ("version", asc)], unique=True, name="versions_unique")
        db.models.create_index([("algorithm", asc), ("created_at", desc)], name="models_by_algorithm")
        db.models.create_index([("metrics.test_accuracy", desc)], name="models_by_accuracy")
        db.models.create_index([("metrics.r2", desc)], name="models_by_r2")
        db.aliases.create_index([("name", asc), ("alias", asc)], unique=True, name="alias_unique")
        db.audit.create_index([("user", asc), ("_id", desc)], name="audit_by_user")
        db.audit.create_index([("action", asc), ("_id", desc)], name="audit_by_action")
        if current < SCHEMA_VERSION:
            log.info("MongoDB store %s: schema %d -> %d", self.uri, current, SCHEMA_VERSION)
            db.meta.update_one({"_id": "schema_version"}, {"$set": {"value": SCHEMA_VERSION}}, upsert=True)

    def _connect(self) -> Any:
        return self._db

    def _reading(self) -> contextlib.nullcontext[Any]:  # pymongo's client is shared by threads
        return contextlib.nullcontext(self._db)

    def _transaction(self, conn: Any) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def _isolated(self, conn: Any, fn: Callable[[Any], T]) -> T:
        return fn(conn)

    def _no_space(self, exc: Exception) -> bool:
        if not isinstance(exc, self._pymongo.errors.PyMongoError):
            return False
        return getattr(exc, "code", None) == _OUT_OF_DISK_SPACE or "No space left on device" in str(exc)

    def _unreachable(self, exc: Exception) -> bool:
        errors = self._pymongo.errors
        return isinstance(exc, errors.AutoReconnect | errors.ServerSelectionTimeoutError | errors.NetworkTimeout)

    def _full_message(self) -> str:
        return f"MongoDB at {self.uri} is out of disk space"

    def _write_job(self, db: Any, write: JobWrite, new: bool) -> None:
        # Upserts even when new: the insert may be retried after an outage that hid its success. No transaction:
        # the rows go first, the summary last, so a job is never loaded without its rows (rows left by a failed
        # write are written again by its retry).
        pymongo, body, job_id = self._pymongo, write.summary, write.job_id
        if write.task_count is not None:
            db.job_tasks.delete_many({"job_id": job_id, "idx": {"$gte": write.task_count}})
        if write.tasks:
            db.job_tasks.bulk_write(
                [
                    pymongo.ReplaceOne({"_id": f"{job_id}/{i}"}, {"job_id": job_id, "idx": i, "task": t}, upsert=True)
                    for i, t in write.tasks
                ],
                ordered=False,
            )
        start = write.artifacts_from
        if write.artifacts_all:
            db.job_artifacts.delete_many({"job_id": job_id, "pos": {"$gte": start + len(write.artifacts)}})
        if write.artifacts:
            db.job_artifacts.bulk_write(
                [
                    pymongo.ReplaceOne(
                        {"_id": f"{job_id}/{start + k}"},
                        {"job_id": job_id, "pos": start + k, "artifact": a},
                        upsert=True,
                    )
                    for k, a in enumerate(write.artifacts)
                ],
                ordered=False,
            )
        doc = {"_id": job_id, "state": body["state"], "created_at": body["created_at"], "job": body}
        db.jobs.replace_one({"_id": job_id}, doc, upsert=True)

    def _delete_job(self, db: Any, job_id: str) -> None:
        # No transaction: the job goes first (a job is never left without part of its history), then what only
        # it used; a retry after an outage repeats all of it harmlessly.
        attempts = [a for a in db.events.distinct("attempt_id", {"job_id": job_id}) if a]
        db.jobs.delete_one({"_id": job_id})
        if attempts:
            db.cursors.delete_many({"_id": {"$in": attempts}})
        db.events.delete_many({"job_id": job_id})
        db.job_tasks.delete_many({"job_id": job_id})
        db.job_artifacts.delete_many({"job_id": job_id})

    def _write_events(self, db: Any, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        pymongo = self._pymongo
        if events:
            rows = [event_row(e) for e in events]
            try:
                db.events.insert_many(rows, ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise
        if cursors:
            db.cursors.bulk_write(
                [pymongo.UpdateOne({"_id": a}, {"$max": {"seq": seq}}, upsert=True) for a, seq in cursors.items()],
                ordered=False,
            )

    def _write_body(self, db: Any, table: Table, key: str, body: dict[str, Any] | None) -> None:
        if body is None:
            db[table].delete_one({"_id": key})
        else:
            db[table].replace_one({"_id": key}, {"_id": key, "body": body}, upsert=True)

    def _read_jobs(self, db: Any) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
        cursors = {c["_id"]: int(c["seq"]) for c in db.cursors.find()}
        groups = db.events.aggregate([{"$group": {"_id": "$job_id", "m": {"$max": "$seq"}}}])
        last = {g["_id"]: int(g["m"]) for g in groups}
        tasks: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for row in db.job_tasks.find({}, {"_id": 0}):
            tasks.setdefault(row["job_id"], []).append((int(row["idx"]), row["task"]))
        artifacts: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for row in db.job_artifacts.find({}, {"_id": 0}):
            artifacts.setdefault(row["job_id"], []).append((int(row["pos"]), row["artifact"]))
        bodies = []
        for doc in db.jobs.find().sort("created_at", 1):
            body = doc["job"]
            if "tasks" not in body:  # saved since schema 3; before, the body held them
                body["tasks"] = [t for _, t in sorted(tasks.get(body["id"], []), key=lambda r: r[0])]
                body["artifacts"] = [a for _, a in sorted(artifacts.get(body["id"], []), key=lambda r: r[0])]
            bodies.append(body)
        return bodies, last, cursors

    def _write_audit(self, db: Any, entry: dict[str, Any]) -> None:
        db.audit.update_one(
            {"_id": int(entry["seq"])}, {"$setOnInsert": {**entry, "_id": int(entry["seq"])}}, upsert=True
        )

    def _read_audit(self, db: Any, user: str, action: str, since: float, limit: int) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"time": {"$gte": since}}
        if user:
            query["user"] = user
        if action:
            query["action"] = action
        rows = db.audit.find(query, {"_id": 0}).sort("_id", -1).limit(limit)
        return [dict(row) for row in rows]

    def _last_audit_seq(self, db: Any) -> int:
        row = db.audit.find_one({}, sort=[("_id", -1)])
        return int(row["_id"]) if row else 0

    def _read_bodies(self, db: Any, table: Table) -> dict[str, dict[str, Any]]:
        return {row["_id"]: row["body"] for row in db[table].find()}

    def _read_events(
        self, db: Any, job_id: str, after_seq: int, kinds: tuple[str, ...], task_index: int | None, limit: int
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"job_id": job_id, "seq": {"$gt": after_seq}}
        if kinds:
            query["kind"] = {"$in": list(kinds)}
        if task_index is not None:
            query["task_index"] = task_index
        if not limit or kinds or task_index is not None:
            return list(db.events.find(query, {"_id": 0}).sort("seq", 1).limit(limit))  # limit 0: no limit
        # A page of the whole history. A job's seqs run 1, 2, 3... (a rare one missing: an agent event stored
        # already), so the page is nearly always the range after_seq+1..after_seq+limit: asking for that range
        # spares a server that sorts all the rest in memory before limiting (SecantusDB; MongoDB walks the
        # (job_id, seq) index and stops at the limit either way); what a gap leaves short comes after it.
        end = after_seq + limit
        query["seq"] = {"$gt": after_seq, "$lte": end}
        rows = list(db.events.find(query, {"_id": 0}).sort("seq", 1).limit(limit))
        if len(rows) < limit:
            query["seq"] = {"$gt": end}
            rows += db.events.find(query, {"_id": 0}).sort("seq", 1).limit(limit - len(rows))
        return rows

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

        return {**await self._call(op), "aliases": []}

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

        return await self._call(op)

    @staticmethod
    def _with_aliases(db: Any, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
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

        return await self._read(read)

    async def get_model(self, name: str, version: int) -> dict[str, Any] | None:
        def read(db: Any) -> dict[str, Any] | None:
            doc = db.models.find_one({"name": name, "version": version}, {"_id": 0})
            return self._with_aliases(db, [doc])[0] if doc else None

        return await self._read(read)

    async def update_model(self, name: str, version: int, fields: dict[str, Any]) -> bool:
        def op(db: Any) -> bool:
            return bool(db.models.update_one({"name": name, "version": version}, {"$set": fields}).matched_count)

        return await self._call(op)

    async def set_alias(self, name: str, alias: str, version: int) -> bool:
        def op(db: Any) -> bool:
            if db.models.find_one({"name": name, "version": version}, {"_id": 1}) is None:
                return False
            db.aliases.update_one({"name": name, "alias": alias}, {"$set": {"version": version}}, upsert=True)
            return True

        return await self._call(op)

    async def remove_alias(self, name: str, alias: str) -> bool:
        return await self._call(lambda db: bool(db.aliases.delete_one({"name": name, "alias": alias}).deleted_count))

    async def delete_model(self, name: str, version: int) -> bool:
        def op(db: Any) -> bool:
            db.aliases.delete_many({"name": name, "version": version})
            return bool(db.models.delete_one({"name": name, "version": version}).deleted_count)

        return await self._call(op)
