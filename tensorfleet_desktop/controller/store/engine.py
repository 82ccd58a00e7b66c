"""The writer thread both backends share: the event loop queues writes and never waits on the database.

One thread does every write. It gathers what is queued for up to `BATCH_WINDOW` (less when someone awaits a
write) and commits it as one group: one transaction in SQLite, one round of writes in MongoDB, the group's
events in one bulk insert beside the cursors they advance (docs/architecture.md, 'Nothing is lost').

- A group the database cannot take for lack of space: its writes are held and retried, oldest first, before
  anything newer; `flush()` raises StoreFullError meanwhile, and an awaited write (a submit) is refused at
  once instead of held. At close, what is still held is lost, loudly.
- A database that does not answer (a MongoDB outage): everything is held, awaited writes and flushes
  included, and retried until it answers, close included: running jobs go on and nothing is dropped.
- Any other failure of a queued write stops the store loudly; an awaited write's failure is its caller's.

Reads run in worker threads. A backend says only how to write and read its database: the hooks below.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Literal, TypeVar

from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord, JobTask, artifact_dict, task_dict
from tensorfleet_desktop.controller.store.base import JobStore, StoreFullError, TeamTable

log = logging.getLogger(__name__)

C = TypeVar("C")  # what a backend's writes and reads are handed: a connection, a database
T = TypeVar("T")
# the tables of plain bodies, keyed by node id, dataset name (a dataset stored before versions) or NAME:VERSION
Table = Literal["agents", "datasets", "dataset_versions", "pools", "tokens", "quotas", "usage"]

BATCH_WINDOW = 0.05  # seconds the writer keeps gathering after the first queued write (<= 100 ms)
_RETRY_FIRST, _RETRY_MAX = 0.5, 10.0  # seconds between tries to commit writes held for space, doubling
_RETRY_UNREACHABLE = 0.5  # seconds between tries while the database does not answer
_WARN_EVERY = 5.0  # seconds between warnings that it still does not
_DRAIN_MAX = 10_000  # writes at most in a group an awaited write commits at once

EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(JobEventRecord))


def event_row(event: JobEventRecord) -> dict[str, Any]:
    return {name: getattr(event, name) for name in EVENT_FIELDS}


def event_from_row(row: Mapping[str, Any]) -> JobEventRecord:
    """The event a stored row holds; fields the record no longer has are left out."""
    return JobEventRecord(**{name: row[name] for name in EVENT_FIELDS if name in row})


@dataclasses.dataclass
class JobWrite:
    """One save of a job: its summary always (Job.summary_dict), and its task and artifact rows, all of them or only
    those that changed since the last save: a sweep's trial rewrites its own row, not the 200 others."""

    summary: dict[str, Any]
    tasks: list[tuple[int, dict[str, Any]]]  # (position in job.tasks, task_dict)
    task_count: int | None  # all rows written: the rows from this position on are deleted (None: only some)
    artifacts: list[dict[str, Any]]  # rows from position artifacts_from on
    artifacts_from: int
    artifacts_all: bool  # rows after these are deleted (a full rewrite from 0: checkpoints were trimmed)

    @property
    def job_id(self) -> str:
        return str(self.summary["id"])


class _Call:
    """A write someone awaits on its event loop (no `fn`: a flush, which waits for everything queued before it)."""

    __slots__ = ("error", "fn", "future", "loop", "result")

    def __init__(self, fn: Callable[[Any], Any] | None) -> None:
        self.fn = fn
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None


def _deliver(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """On the loop: the awaiting callers of one group get their results, all in one wake-up of the loop."""
    for future, result, failure in outcomes:
        if future.cancelled():  # its caller stopped waiting
            continue
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(result)


@dataclasses.dataclass
class _Events:
    events: list[JobEventRecord]
    cursors: dict[str, int]

    def absorb(self, events: Sequence[JobEventRecord], cursors: dict[str, int]) -> None:
        """Later events join these: one bulk insert, and each attempt's highest cursor."""
        self.events += events
        for attempt, seq in cursors.items():
            self.cursors[attempt] = max(seq, self.cursors.get(attempt, 0))


_Write = Callable[[Any], object]
_Item = _Write | _Call | _Events


def _merge_events(batch: list[_Item]) -> list[_Item]:
    """Consecutive event writes become one: one bulk insert, and each attempt's highest cursor."""
    out: list[_Item] = []
    run: _Events | None = None  # the merged write of the current run of event writes
    for item in batch:
        if not isinstance(item, _Events):
            out.append(item)
            run = None
        elif run is None:
            run = item
            out.append(run)
        else:
            run.absorb(item.events, item.cursors)
    return out


class QueuedStore(JobStore, Generic[C]):
    """The JobStore on one writer thread; subclasses implement the hooks for their database."""

    #: whether a failed group leaves nothing behind (a transaction); otherwise the writes done before the
    #: failure stay done and only the rest is retried
    atomic: bool

    def __init__(self) -> None:
        # what is queued for the writer (None: the close). A put wakes the writer only when it waits idle, or for an
        # awaited write or the close: within its batch window it sleeps on, where a queue.get per put woke it up (a
        # thread switch each) a thousand times a second under load
        self._queue: collections.deque[_Item | None] = collections.deque()
        self._wake = threading.Event()
        self._busy = False  # the writer is gathering or committing: it looks at the queue before it waits again
        self._urgent = False  # an awaited write or the close was queued since the writer last looked
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._full: StoreFullError | None = None  # set while writes wait for space
        self._unanswered_since = 0.0  # monotonic time the database stopped answering; 0 while it answers
        self._warned = 0.0
        self._retry = _RETRY_FIRST
        # job id -> (task rows written, the artifacts as last written): what a partial save may leave out. Kept
        # on the event loop's side; a job not here (its first save since start) is written whole.
        self._written: dict[str, tuple[int, list[ArtifactInfo]]] = {}
        # job id -> (the job, the tasks saved: None for all) of the saves made in this loop turn (save_job)
        self._pending: dict[str, tuple[Job, list[JobTask] | None]] = {}
        self._pending_events: _Events | None = None  # the events appended in this loop turn (append_events)
        self._pending_soon = False  # _put_pending is scheduled

    # ---- the hooks: how this backend writes and reads its database (all blocking, never on the loop)

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Reach the database and bring its schema up to date, before the writer starts."""

    @abc.abstractmethod
    def _connect(self) -> C:
        """The writer thread's handle on the database."""

    def _disconnect(self, conn: C) -> None:
        """The writer is done with its handle."""

    @abc.abstractmethod
    def _reading(self) -> AbstractContextManager[C]:
        """A handle for one read, from a worker thread."""

    @abc.abstractmethod
    def _transaction(self, conn: C) -> AbstractContextManager[object]:
        """Around one group of writes: its commit, or its rollback when it raises."""

    @abc.abstractmethod
    def _isolated(self, conn: C, fn: Callable[[C], T]) -> T:
        """Run an awaited write so that its failure undoes none of the group's other writes."""

    @abc.abstractmethod
    def _no_space(self, exc: Exception) -> bool:
        """Whether the database refused a write for lack of disk space."""

    def _unreachable(self, exc: Exception) -> bool:
        """Whether the database did not answer (retried until it does)."""
        return False

    @abc.abstractmethod
    def _full_message(self) -> str:
        """What the user is told while writes wait for space."""

    @abc.abstractmethod
    def _write_job(self, conn: C, write: JobWrite, new: bool) -> None:
        """Upsert a job's summary and the task and artifact rows in `write` (rows first, then the summary: a job is
        never seen without its rows); `new`: its first save, which may refuse an id already stored."""

    @abc.abstractmethod
    def _write_audit(self, conn: C, entry: dict[str, Any]) -> None:
        """Insert one audit entry (keyed by its seq; a repeat is ignored)."""

    @abc.abstractmethod
    def _read_audit(self, conn: C, user: str, action: str, since: float, limit: int) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _last_audit_seq(self, conn: C) -> int: ...

    @abc.abstractmethod
    def _delete_job(self, conn: C, job_id: str) -> None:
        """Delete the job's body, its events and the cursors of its attempts (safe to repeat)."""

    @abc.abstractmethod
    def _write_events(self, conn: C, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        """Insert the events (as rows: event_row), skipping those already stored (same attempt_id and agent_seq),
        and raise each attempt's cursor to at least the given one."""

    @abc.abstractmethod
    def _write_body(self, conn: C, table: Table, key: str, body: dict[str, Any] | None) -> None:
        """Upsert a body; None deletes it."""

    @abc.abstractmethod
    def _read_jobs(self, conn: C) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
        """Every job's body, oldest first; the highest event seq of each job; each attempt's cursor."""

    @abc.abstractmethod
    def _read_bodies(self, conn: C, table: Table) -> dict[str, dict[str, Any]]: ...

    @abc.abstractmethod
    def _read_events(
        self, conn: C, job_id: str, after_seq: int, kinds: tuple[str, ...], task_index: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Event rows of a job after a seq, in seq order, optionally of some kinds or one task; the first `limit`
        of them (0: all)."""

    # ---- lifecycle

    async def open(self) -> None:
        await asyncio.to_thread(self._prepare)
        self._thread = threading.Thread(target=self._writer, name="store-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._put_pending()
            self._enqueue(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # ---- the JobStore, once for every backend

    def save_job(self, job: Job, tasks: Iterable[JobTask] | None = None) -> None:
        """On the event loop, the job is copied once at the end of this loop turn, however many times it is saved
        in it (a dispatch saves its job twice, a finished task's end and its job's end come together); all the
        saves of a turn go to the writer as one item. An ended job (and what is pending with it) is queued at once.
        Off the loop, it is copied now."""
        self._check_alive()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            write = self._job_write(job, tasks)  # a copy as it is now: the job changes on
            self._put(lambda conn: self._write_job(conn, write, new=False))
            return
        pending = self._pending.get(job.id)
        if pending is None:
            self._pending[job.id] = (job, None if tasks is None else list(tasks))
            self._put_pending_soon(loop)
        elif pending[1] is not None:  # only some tasks so far
            self._pending[job.id] = (job, None if tasks is None else [*pending[1], *tasks])
        elif pending[0] is not job:
            self._pending[job.id] = (job, None)
        if job.state.terminal:
            # a job's end is queued before anyone can be told of it: the loop may run a client's call (WatchJobs,
            # fair_loop.py's first lane) ahead of the end-of-turn callback
            self._put_pending()

    def _put_pending(self) -> None:
        """The events appended and the jobs saved since the last call: the events as one write, then the jobs,
        copied now, as one write in the order of their first save. Runs at the end of the loop turn of an append or
        a save (call_soon), and before anything that must come after them: an awaited write, a flush, a deletion,
        the close."""
        self._pending_soon = False
        if self._pending_events is not None:
            events, self._pending_events = self._pending_events, None
            self._put(events)
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        self._put(self._jobs_writer([self._job_write(job, tasks) for job, tasks in pending.values()], new=False))

    def _put_pending_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """_put_pending at the end of this loop turn, once however many saves and appends come in it."""
        if not self._pending_soon:
            self._pending_soon = True
            loop.call_soon(self._put_pending)

    def _jobs_writer(self, writes: list[JobWrite], new: bool) -> Callable[[C], None]:
        def write_all(conn: C) -> None:
            for write in writes:
                self._write_job(conn, write, new=new)

        return write_all

    async def insert_job(self, job: Job) -> None:
        await self.insert_jobs([job])

    async def insert_jobs(self, jobs: Sequence[Job]) -> None:
        """One write for all, in one commit (SQLite: one savepoint, so a failure keeps none of them)."""
        await self._call(self._jobs_writer([self._job_write(job, None) for job in jobs], new=True))

    async def delete_job(self, job_id: str) -> None:
        self._put_pending()  # a save of the job queued before the deletion is applied before it, as before
        self._written.pop(job_id, None)
        await self._call(lambda conn: self._delete_job(conn, job_id))

    def _job_write(self, job: Job, tasks: Iterable[JobTask] | None) -> JobWrite:
        """What to write: the summary, the given tasks' rows and those of tasks added since the last save, the
        artifacts added since; everything when `tasks` is None, at the job's first save since start, or when
        tasks or artifacts went away (a retried sweep starts over, old checkpoints are trimmed)."""
        known = self._written.get(job.id)
        count = len(job.tasks)
        if tasks is None or known is None or known[0] > count:
            rows = [(i, task_dict(t)) for i, t in enumerate(job.tasks)]
            task_count: int | None = count
        else:
            positions = set(range(known[0], count))
            for task in tasks:
                i = task.index
                positions.add(i if 0 <= i < count and job.tasks[i] is task else job.tasks.index(task))
            rows = [(i, task_dict(job.tasks[i])) for i in sorted(positions)]
            task_count = None
        artifacts = job.artifacts
        before = known[1] if known is not None and task_count is None else None
        if (
            before is not None
            and len(before) <= len(artifacts)
            and all(a is b for a, b in zip(before, artifacts[: len(before)], strict=True))
        ):
            start, full = len(before), False
        else:
            start, full = 0, True
        self._written[job.id] = (count, list(artifacts))
        return JobWrite(
            job.summary_dict(), rows, task_count, [artifact_dict(a) for a in artifacts[start:]], start, full
        )

    def append_events(self, events: list[JobEventRecord], cursors: dict[str, int]) -> None:
        """On the event loop, the events of one loop turn go to the writer as one item at the end of the turn (with
        the turn's job saves: _put_pending), each attempt's highest cursor with them."""
        self._check_alive()
        pending = self._pending_events
        if pending is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._put(_Events(list(events), dict(cursors)))
                return
            self._pending_events = _Events(list(events), dict(cursors))
            self._put_pending_soon(loop)
            return
        pending.absorb(events, cursors)

    def save_agent(self, node_id: str, body: dict[str, Any]) -> None:
        self._put_body("agents", node_id, body)

    def delete_agent(self, node_id: str) -> None:
        self._put_body("agents", node_id, None)

    def save_dataset(self, name: str, body: dict[str, Any]) -> None:
        self._put_body("datasets", name, body)

    def delete_dataset(self, name: str) -> None:
        self._put_body("datasets", name, None)

    def save_pool(self, name: str, body: dict[str, Any]) -> None:
        self._put_body("pools", name, body)

    def delete_pool(self, name: str) -> None:
        self._put_body("pools", name, None)

    def save_team_record(self, table: TeamTable, key: str, body: dict[str, Any] | None) -> None:
        self._put_body(table, key, body)

    async def load_team_records(self, table: TeamTable) -> dict[str, dict[str, Any]]:
        return await self._read(lambda conn: self._read_bodies(conn, table))

    def append_audit(self, entry: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(entry)
        self._put(lambda conn: self._write_audit(conn, snapshot))

    async def audit_entries(
        self, user: str = "", action: str = "", since: float = 0.0, limit: int = 200
    ) -> list[dict[str, Any]]:
        return await self._read(lambda conn: self._read_audit(conn, user, action, since, max(1, limit)))

    async def last_audit_seq(self) -> int:
        return await self._read(self._last_audit_seq)

    def save_dataset_version(self, name: str, version: int, body: dict[str, Any]) -> None:
        self._put_body("dataset_versions", f"{name}:{version}", body)

    def delete_dataset_version(self, name: str, version: int) -> None:
        self._put_body("dataset_versions", f"{name}:{version}", None)

    async def flush(self) -> None:
        self._put_pending()
        call = _Call(None)
        self._put(call)
        await call.future

    async def load_jobs(self) -> list[Job]:
        def read(conn: C) -> list[Job]:
            bodies, last, cursors = self._read_jobs(conn)
            jobs = []
            for body in bodies:
                job = Job.from_dict(body)
                job.last_event_seq = max(job.last_event_seq, last.get(job.id, 0))
                for task in job.tasks:
                    task.cursor = max(task.cursor, cursors.get(task.agent_task_id, 0))
                jobs.append(job)
            return jobs

        return await self._read(read)

    async def load_agents(self) -> dict[str, dict[str, Any]]:
        return await self._read(lambda conn: self._read_bodies(conn, "agents"))

    async def load_datasets(self) -> dict[str, dict[str, Any]]:
        return await self._read(lambda conn: self._read_bodies(conn, "datasets"))

    async def load_pools(self) -> dict[str, dict[str, Any]]:
        return await self._read(lambda conn: self._read_bodies(conn, "pools"))

    async def load_dataset_versions(self) -> list[dict[str, Any]]:
        return list((await self._read(lambda conn: self._read_bodies(conn, "dataset_versions"))).values())

    async def events(
        self,
        job_id: str,
        after_seq: int = 0,
        kinds: tuple[str, ...] = (),
        task_index: int | None = None,
        *,
        limit: int = 0,
    ) -> list[JobEventRecord]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")

        def read(conn: C) -> list[JobEventRecord]:  # decoded in the worker thread too, not on the loop
            return [event_from_row(r) for r in self._read_events(conn, job_id, after_seq, kinds, task_index, limit)]

        return await self._read(read)

    # ---- for the backends' own operations (the model registry)

    async def _call(self, fn: Callable[[C], T]) -> T:
        """Queue a write and wait until it is committed: its result, or its error."""
        self._put_pending()  # the jobs saved before it are committed with it, as when each save was queued at once
        call = _Call(fn)
        self._put(call)
        result: T = await call.future
        return result

    async def _read(self, fn: Callable[[C], T]) -> T:
        return await asyncio.to_thread(self._run_read, fn)

    def _run_read(self, fn: Callable[[C], T]) -> T:
        with self._reading() as conn:
            return fn(conn)

    # ---- the writer thread

    def _check_alive(self) -> None:
        if self._failed is not None:
            raise RuntimeError(f"the store {self.uri} failed: {self._failed}") from self._failed

    def _put(self, item: _Item) -> None:
        self._check_alive()
        self._enqueue(item)

    def _enqueue(self, item: _Item | None) -> None:
        self._queue.append(item)
        if item is None or isinstance(item, _Call):
            self._urgent = True
            self._wake.set()
        elif not self._busy:
            self._wake.set()

    def _put_body(self, table: Table, key: str, body: dict[str, Any] | None) -> None:
        snapshot = copy.deepcopy(body)  # the caller may change its dict before the writer gets to it
        self._put(lambda conn: self._write_body(conn, table, key, snapshot))

    def _writer(self) -> None:
        conn = self._connect()
        held: list[_Item] = []  # writes not committed yet, retried before anything newer
        closing = False
        try:
            while not (closing and not held):
                batch: list[_Item] = []
                if not closing:
                    closing = self._gather(batch, self._retry if held else None)
                elif self._unanswered_since:
                    time.sleep(_RETRY_UNREACHABLE)  # closing: nothing new comes, the held writes still wait
                held = self._commit(conn, [*held, *batch])
                if closing and held and not self._unanswered_since:
                    log.critical("store %s: %d write(s) lost: %s", self.uri, len(held), self._full_message())
                    break
        finally:
            self._disconnect(conn)

    def _gather(self, batch: list[_Item], wait: float | None) -> bool:
        """Add to `batch` what is queued now and within the batch window; True when the store closes."""
        if not self._idle(wait):  # time to retry what is held
            return False
        deadline = time.monotonic() + BATCH_WINDOW
        while True:
            self._urgent = False  # before looking: an awaited write queued from here on sets it again
            while self._queue:
                item = self._queue.popleft()
                if item is None:
                    return True
                batch.append(item)
                if isinstance(item, _Call):
                    return self._drain(batch)  # someone waits: commit now, with what is queued already
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._wake.clear()
            if not self._urgent:
                self._wake.wait(left)  # only an awaited write or the close ends the window early

    def _idle(self, wait: float | None) -> bool:
        """Wait (at most `wait` seconds, None: for ever) until something is queued; whether something is."""
        self._busy = False  # from here on every put wakes the writer
        while not self._queue:
            self._wake.clear()
            if self._queue:
                break
            if not self._wake.wait(wait):
                break
        self._busy = True
        return bool(self._queue)

    def _drain(self, batch: list[_Item]) -> bool:
        """Add what is queued right now, waiting for nothing: concurrent submits share one commit (a group
        commit) instead of one transaction each. True when the store closes."""
        while len(batch) < _DRAIN_MAX and self._queue:
            item = self._queue.popleft()
            if item is None:
                return True
            batch.append(item)
        return False

    def _commit(self, conn: C, batch: list[_Item]) -> list[_Item]:
        """Write the batch as one group; returns what is held to retry."""
        items = _merge_events(batch)
        done = 0
        try:
            with self._transaction(conn):
                for item in items:
                    self._apply(conn, item)
                    done += 1
        except Exception as exc:
            if not self.atomic:  # what went in before the failure stays in
                self._settle(items[:done])
                items = items[done:]
            return self._hold(items, exc)
        if self._full is not None:
            log.warning("store %s: space again, held writes saved", self.uri)
        if self._unanswered_since:
            down = time.monotonic() - self._unanswered_since
            log.warning("store %s answers again after %.0f s; held writes saved", self.uri, down)
        self._full, self._unanswered_since, self._retry = None, 0.0, _RETRY_FIRST
        self._settle(items)
        return []

    def _apply(self, conn: C, item: _Item) -> None:
        if isinstance(item, _Events):
            self._write_events(conn, item.events, item.cursors)
        elif isinstance(item, _Call):
            item.error = None  # a retried call starts over
            if item.fn is not None:
                try:
                    item.result = self._isolated(conn, item.fn)
                except Exception as exc:
                    if self._no_space(exc) or self._unreachable(exc):
                        raise  # the whole group waits
                    item.error = exc  # the caller's alone
        else:
            item(conn)

    def _hold(self, items: list[_Item], exc: Exception) -> list[_Item]:
        """The group failed with `exc`: what is held to retry, and what the awaiting callers are told."""
        if self._unreachable(exc):
            now = time.monotonic()
            if not self._unanswered_since or now - self._warned >= _WARN_EVERY:
                log.warning(
                    "store %s does not answer (%s); holding %d write(s) and retrying", self.uri, exc, len(items)
                )
                self._warned = now
            self._unanswered_since = self._unanswered_since or now
            self._retry = _RETRY_UNREACHABLE
            return items  # awaited writes and flushes too: they wait for the database
        self._unanswered_since = 0.0
        if self._no_space(exc):
            held: list[_Item] = [item for item in items if not isinstance(item, _Call)]
            if self._full is None:
                log.error(
                    "store %s cannot save (%s): holding %d write(s) until there is space", self.uri, exc, len(held)
                )
                self._retry = _RETRY_FIRST
            else:
                self._retry = min(_RETRY_MAX, self._retry * 2)
            self._full = StoreFullError(self._full_message())
            self._settle(items, self._full)  # an awaited write is refused, not held
            return held
        log.critical("store write failed, the controller can no longer save: %s", exc)
        self._failed = exc
        self._settle(items, RuntimeError(f"the store {self.uri} failed: {exc}"))
        return []

    @staticmethod
    def _settle(items: list[_Item], error: BaseException | None = None) -> None:
        """Tell the awaiting callers among `items` their result, or `error`: for lack of space that one, as
        nothing of theirs was kept; otherwise their own error first."""
        # one call_soon_threadsafe per loop, not one per caller: concurrent submits sharing a commit woke the loop
        # once each (a write to its self-pipe and a read)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for item in items:
            if isinstance(item, _Call):
                failure = error if item.error is None or isinstance(error, StoreFullError) else item.error
                by_loop.setdefault(item.loop, []).append((item.future, item.result, failure))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_deliver, outcomes)
