"""The on-disk task journal (docs/architecture.md, 'Nothing is lost').

Every task event gets a per-task sequence number and is appended to tasks/<task_id>/events.pb by one writer thread
that group-commits (one write per task and batch), but for a task's first AT_ONCE events, written on the loop as
they come while nothing of the task waits for the writer (_at_once). Watchers only ever see committed events:
written to the kernel, so anything a controller has received survives an agent crash or restart. Nothing is
fsynced: that would only add a power loss or kernel crash, which takes the task's processes (and the agent's link to
the controller) down with it, and cost ~7 ms per commit on the path of every task. After such a crash (a new boot
id) the tasks that were running are forgotten, not reported: their journal may have lost events a controller had
seen (see load).

An event is encoded once, when it is journaled: the file is a protobuf TaskEventBatch, and WatchTask sends
runs of its records as they are (docs/architecture.md, 'The path of a metric point').

A task's metadata (its spec, slots, creation time and boot id) heads its events file, in a field TaskEventBatch
does not have (META_FIELD: a protobuf reader of the whole file skips it), written with the first event: one file
per task, created once. Every new file is an inode to allocate: 10-40 us of CPU on ext4 here, and over 0.3 ms in a
crowded directory (the dev box's /tmp), where it was most of a small task's agent time; a separate task.json
(written to a temporary name, then renamed) was one more per task. Journals of older agents, with their task.json,
are read as before; an older agent removes these (no task.json: it takes them for never written).

A task's directory is made ahead: a thread of its own (not the writer, which a task's first commit would wait
behind) keeps SPARE_DIRS of them ready (.spare-*, each with its empty events file and its work dir), and a new
task's is one renamed to its id (~16 us). Made on the task's path, the
directory, its events file and its work dir were three inode allocations, ~60 us of CPU on a quiet ext4 and over
1.5 ms where the dev box's churned directories made each cost ~0.5 ms: the slowest part of a noop task's start.

A full disk must not silence the agent: the journal keeps a small reserve file and
gives back a little of it whenever a write fails for want of space, so the events
that report the failure (a checkpoint that could not be written, the task's end)
are still written and streamed. Beyond the reserve, events wait in memory, unstreamed, and are
retried until space frees; the reserve is then made again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import itertools
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tensorfleet_agent.core.errors import NotFound
from tensorfleet_agent.core.types import EventPayload, Finished, StateChanged, TaskEvent, TaskState
from tensorfleet_agent.rpc.convert import event_record, events_from_batch, framed, split_records, unframe
from tensorfleet_agent.security.files import DIR_MODE, FILE_MODE, private_dir, private_opener, tighten

log = logging.getLogger(__name__)

EVENTS_FILE = "events.pb"
TASK_FILE = "task.json"  # older agents' metadata file; a journal now carries its metadata in its events file
# Field 15 of TaskEventBatch (length-delimited), unused by it: the journal's metadata, JSON, first in the file.
META_FIELD = b"\x7a"
_KEEP_IN_MEMORY = 64  # finished tasks whose events stay cached for fast replay
BATCH_BYTES = 256 << 10  # at most this much in one WatchTask message (one record may be more)
_RETRY_UNWRITTEN = 2.0  # seconds between attempts to write journals a full disk refused
RESERVE_FILE = ".reserve"
WORK_DIR = "work"  # a task's working directory, inside its task directory (the executor's; made with the spares)
SPARE_PREFIX = ".spare-"  # task directories made ahead; removed at load, never a task's until renamed to its id
SPARE_DIRS = 4
AT_ONCE = 8  # a task's first events written on the loop at once (all of a short task's: its start, a line, its end)
# The journals' layout, in FORMAT_FILE beside them: 2, a task's metadata heads its events.pb; 1 (no file), task.json
# beside it. An agent refuses a data dir whose journals are newer than it reads, rather than take them for broken.
FORMAT_FILE = "FORMAT"
JOURNAL_FORMAT = 2
RESERVE_BYTES = 4 << 20  # about 40,000 events: enough to report the failures a full disk causes
_RESERVE_STEP = 64 << 10
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot of the machine ("" where the kernel does not say): a task journaled under another boot may have
    lost the tail its controller saw, since the journal is not fsynced."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return ""


@dataclass
class TaskLog:
    """One task's journal, as the agent knows it."""

    task_id: str
    directory: Path
    meta: dict[str, Any]
    created_at: float
    records: list[bytes] | None = field(default_factory=list)  # event seq n is records[n - 1]; None = only on disk
    next_seq: int = 1
    committed_seq: int = 0
    state: TaskState = TaskState.ACCEPTED
    finished_at: float = 0.0
    exit_cause: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    head_due: bool = False  # its metadata is not written yet: its events file, made ahead, waits for its first write
    on_disk: bool = False  # its file holds its metadata (then events up to committed_seq)
    writer_has_it: bool = False  # the writer thread has written to its file (and keeps it open until its end)
    at_once_left: int = 0  # events it may still have written at once, on the loop (Journal._at_once)

    @property
    def finished(self) -> bool:
        return self.state.terminal

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def _observe(self, event: TaskEvent) -> None:
        payload = event.payload
        if isinstance(payload, StateChanged):
            self.state = payload.state
        elif isinstance(payload, Finished):
            self.state = payload.status
            self.finished_at = event.time
            self.exit_cause = payload.exit_cause


# a journal, an event's record and its seq (0: the journal's metadata; -1: its end was written on the loop, close it)
_Item = tuple[TaskLog, bytes, int]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass
class _Unwritten:
    """A journal's bytes not yet on disk (the disk was full), up to event `seq` (its metadata first, if due)."""

    entry: TaskLog
    data: bytearray = field(default_factory=bytearray)
    seq: int = 0


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._logs: dict[str, TaskLog] = {}
        self._cached_finished: OrderedDict[str, None] = OrderedDict()
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._turn: list[_Item] = []  # the loop's appends of this turn, handed to the writer together
        self._files: dict[str, IO[bytes]] = {}
        self._unwritten: dict[str, _Unwritten] = {}  # writer thread only
        self._meta_due: set[str] = set()  # writer thread only: journals whose metadata goes with their first event
        self._write_errors: set[str] = set()
        self._reserve_retry_at = 0.0
        self._reserve_in_use = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._boot_id = boot_id()
        self._spares: collections.deque[Path] = collections.deque()  # made by the spares thread, taken by create()
        self._spare_names = itertools.count()
        self._spares_wanted = threading.Event()
        self._spares_thread: threading.Thread | None = None
        self._closing = False

    # ---- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._writer, name="journal-writer", daemon=True)
        self._thread.start()
        self._spares_thread = threading.Thread(target=self._spare_maker, name="journal-spares", daemon=True)
        self._spares_thread.start()

    async def close(self) -> None:
        if self._thread is not None:
            self._hand_over()
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._spares_thread is not None:
            self._closing = True
            self._spares_wanted.set()
            await asyncio.to_thread(self._spares_thread.join)
            self._spares_thread = None

    def load(self) -> list[TaskLog]:
        """Read every journal on disk (blocking: call before serving or in a thread). A task that was running when
        the machine went down (its journal has no Finished and another boot id) is forgotten, its directory
        removed: its last events may not have reached the disk, while its controller may have seen them, so an
        end journaled now could get a sequence number the controller already holds and never be streamed to it.
        Unknown, it is re-placed (the controller's TaskUnknown: worker_lost). ValueError naming the problem when a
        newer agent wrote them (FORMAT_FILE)."""
        private_dir(self.root)
        self._claim_format()
        loaded = []
        boot = boot_id()
        for directory in sorted(self.root.iterdir()):
            if directory.name.startswith(SPARE_PREFIX):  # made ahead for a task that never came
                shutil.rmtree(directory, ignore_errors=True)
                continue
            if not directory.is_dir():
                continue
            meta_file = directory / TASK_FILE
            try:
                if meta_file.is_file():  # an older agent's journal
                    tighten(meta_file, FILE_MODE)  # journals written by an older version were world-readable
                    meta: dict[str, Any] | None = json.loads(meta_file.read_text())
                    records, events = _read_journal(directory / EVENTS_FILE, repair=True)
                else:
                    meta, records, events = _read_task(directory / EVENTS_FILE, repair=True)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable journal %s: %s", directory, exc)
                continue
            if meta is None:  # accepted, then the agent stopped before the writer wrote the task's first event (a
                # full disk holds it back): no journal to resume, and nothing else would ever remove it
                log.warning("removing task dir %s: the agent stopped before its journal was written", directory)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            for path, mode in ((directory, DIR_MODE), (directory / EVENTS_FILE, FILE_MODE)):
                tighten(path, mode)
            entry = TaskLog(directory.name, directory, meta, float(meta.get("created_at", 0.0)), records=None)
            for event in events:
                entry._observe(event)
            entry.next_seq = len(records) + 1
            entry.committed_seq = entry.last_seq
            if not entry.finished and meta.get("boot_id", boot) != boot:  # (older journals were fsynced: kept)
                log.warning("task %s was running when the machine went down: forgotten", entry.task_id)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            if not entry.finished:
                entry.records = records  # the caller will finish it
            self._logs[entry.task_id] = entry
            loaded.append(entry)
        return loaded

    def _claim_format(self) -> None:
        """Refuse journals of a newer layout; else say which layout is written from now on. (Agents older than the
        file delete what this one writes: they take a task dir without task.json for one never written.)"""
        path = self.root / FORMAT_FILE
        try:
            found = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            found = 0
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable journal format ({exc}); remove the file if it is damaged") from None
        if found > JOURNAL_FORMAT:
            raise ValueError(
                f"{self.root}: its task journals were written by a newer agent (journal format {found}; this agent "
                f"reads up to {JOURNAL_FORMAT}): run the newer agent, or give this one another --data-dir"
            )
        if found < JOURNAL_FORMAT:
            tmp = path.with_name(FORMAT_FILE + ".tmp")
            with open(tmp, "w", opener=private_opener) as fh:
                fh.write(f"{JOURNAL_FORMAT}\n")
            os.replace(tmp, path)

    def prune(self, max_age_seconds: float, max_finished: int) -> int:
        """Delete finished journals older than the retention or beyond the count (blocking)."""
        now = time.time()
        finished = sorted((e for e in self._logs.values() if e.finished), key=lambda e: e.finished_at)
        doomed = [e for e in finished if now - e.finished_at > max_age_seconds]
        keep = [e for e in finished if e not in doomed]
        if len(keep) > max_finished:
            doomed += keep[: len(keep) - max_finished]
        for entry in doomed:
            shutil.rmtree(entry.directory, ignore_errors=True)
            self._logs.pop(entry.task_id, None)
            self._cached_finished.pop(entry.task_id, None)
        return len(doomed)

    # ---- writing

    def _take_spare(self, task_id: str) -> Path | None:
        """A directory made ahead (_spare_maker), now the task's (a rename); None when none is ready (the first
        tasks, a burst, a full disk) or the name is taken."""
        if not self._spares:
            return None
        spare, target = self._spares.popleft(), self.root / task_id
        try:
            os.rename(spare, target)  # replaces nothing but an empty directory
        except OSError:
            self._spares.appendleft(spare)
            return None
        self._spares_wanted.set()
        return target

    def create(self, task_id: str, meta: dict[str, Any]) -> TaskLog:
        """Make the task's directory its own (a spare renamed, else a mkdir: on the loop); its metadata heads its
        events file, written with its first event (ACCEPTED, right after): at once into a spare's file, else by the
        writer. Until then a crash forgets the task (a journal without its metadata is no task), as it would its
        unwritten events: its controller re-places it (TaskUnknown)."""
        spare = self._take_spare(task_id)
        directory = spare or private_dir(self.root / task_id)  # it keeps whatever the task printed: its user's only
        created_at = time.time()
        meta = {**meta, "created_at": created_at, "boot_id": self._boot_id}
        entry = TaskLog(task_id, directory, meta, created_at, head_due=spare is not None, at_once_left=AT_ONCE)
        self._logs[task_id] = entry
        if spare is None:
            self._enqueue((entry, b"", 0))  # seq 0: its metadata, written by the writer with the first event
        return entry

    def append(self, task_id: str, payload: EventPayload, trial: int = -1) -> TaskEvent:
        """Assign the next seq and queue the event for the group commit; never blocks. `trial`: the bundled trial
        (TaskSpec.trials) the event is about; -1 for the task's own."""
        entry = self.get(task_id)
        if entry.finished:
            raise RuntimeError(f"task {task_id} already finished; event {payload!r} dropped")
        event = TaskEvent(task_id, entry.next_seq, time.time(), payload, trial)
        entry.next_seq += 1
        entry._observe(event)
        assert entry.records is not None
        record = event_record(event)
        entry.records.append(record)
        head = _meta_record(entry.meta) if entry.head_due else b""  # its file was made ahead: the metadata first
        if self._at_once(entry, event) and self._write_now(entry, head + record):
            entry.head_due, entry.on_disk = False, True
            entry.at_once_left -= 1
            if entry.finished and entry.writer_has_it:
                self._enqueue((entry, b"", -1))  # the writer's handle of its file: closed
            self._committed([(entry, event.seq)])
            return event
        if entry.head_due:
            entry.head_due = False
            self._enqueue((entry, b"", 0))  # the writer writes the metadata with the event
        self._enqueue((entry, record, event.seq))
        return event

    def _on_loop(self) -> bool:
        return _running_loop() is self._loop is not None

    def _at_once(self, entry: TaskLog, event: TaskEvent) -> bool:
        """Whether the event is written at once, on the loop: one of the task's first AT_ONCE events (a small task's
        start, its lines and its end: the path of every task, where each hop to the writer thread and back cost
        ~0.5 ms) when everything before it is on disk, so it overtakes nothing waiting for the writer. The rest (a
        long task's metrics and lines, in bursts) go to the writer, which writes each burst in one go; and all while
        a full disk has the writer using its reserve."""
        return (
            entry.at_once_left > 0
            and (entry.on_disk or entry.head_due)
            and entry.committed_seq == event.seq - 1
            and not self._reserve_in_use
            and self._on_loop()
        )

    def _write_now(self, entry: TaskLog, data: bytes) -> bool:
        """Append to the task's events file at once (one write of a few hundred bytes to an existing file, ~15 us,
        where the hop to the writer thread and back put ~0.5-1 ms before its watchers on a busy 2-core box). False,
        and nothing written, when the write fails: the writer then writes it, with its full-disk handling."""
        try:
            fd = os.open(entry.directory / EVENTS_FILE, os.O_WRONLY | os.O_APPEND)
        except OSError:
            return False
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if os.write(fd, data) == len(data):  # a write that fails writes nothing
                return True
            os.ftruncate(fd, size)  # a short write (a full disk): the writer writes it whole
        except OSError as exc:
            log.debug("journal %s: written by the writer instead (%s)", entry.task_id, exc)
        finally:
            os.close(fd)
        return False

    def _enqueue(self, item: _Item) -> None:
        """Hand the item to the writer with the others the loop queues meanwhile: at the end of the turn after this
        one, so that what a task's next step journals right after (RUNNING after ACCEPTED: the task runner's first
        step is scheduled then) goes in the same commit and the same message to its watchers, and the writer wakes
        once for them. Off the loop (none running, or another thread): at once."""
        loop = self._loop
        if loop is None or self._thread is None or _running_loop() is not loop:
            self._queue.put([item])
            return
        if not self._turn:
            loop.call_soon(loop.call_soon, self._hand_over)
        self._turn.append(item)

    def _hand_over(self) -> None:
        if self._turn:
            items, self._turn = self._turn, []
            self._queue.put(items)

    def _writer(self) -> None:
        self._make_reserve()
        while True:
            try:  # while lines wait for disk space, retry every few seconds even if nothing new comes
                item = self._queue.get(timeout=_RETRY_UNWRITTEN if self._unwritten else None)
            except queue.Empty:
                self._commit([])
                continue
            if item is None:
                break
            batch = item
            stop = False
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            self._commit(batch)
            if stop:
                break
        if self._unwritten:
            self._commit([])
        if self._unwritten:
            log.error("journal: %d task(s) lost their last events: the disk is still full", len(self._unwritten))
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def _commit(self, batch: list[tuple[TaskLog, bytes, int]]) -> None:
        """Append to each journal with lines waiting; tell watchers about what the kernel has."""
        for entry, line, seq in batch:
            if seq == 0:
                self._meta_due.add(entry.task_id)
                continue
            if seq < 0:  # its end was written at once: nothing more comes from here
                fh = self._files.pop(entry.task_id, None)
                if fh is not None:
                    fh.close()
                continue
            unwritten = self._unwritten.get(entry.task_id)
            if unwritten is None:
                unwritten = self._unwritten[entry.task_id] = _Unwritten(entry)
                if entry.task_id in self._meta_due:  # its file starts with its metadata, in the same write
                    self._meta_due.discard(entry.task_id)
                    unwritten.data.extend(_meta_record(entry.meta))
            unwritten.data.extend(line)
            unwritten.seq = seq
        done: list[tuple[TaskLog, int]] = []
        for task_id, unwritten in list(self._unwritten.items()):
            try:
                fh = self._write_making_room(unwritten)
            except OSError as exc:
                self._write_failed(task_id, exc)
                continue
            del self._unwritten[task_id]
            done.append((unwritten.entry, unwritten.seq))
            if task_id in self._write_errors:
                self._write_errors.discard(task_id)
                log.info("journal %s: written again", task_id)
            if fh is not None and unwritten.entry.finished and unwritten.seq == unwritten.entry.last_seq:
                fh.close()
                del self._files[task_id]
        if self._reserve_in_use and not self._unwritten:
            self._make_reserve()
        if self._loop is not None and done:
            self._loop.call_soon_threadsafe(self._written, done)

    def _write_making_room(self, unwritten: _Unwritten) -> IO[bytes] | None:
        """Write; on a full disk give back some of the reserve and try once more."""
        try:
            return self._write(unwritten)
        except OSError as exc:
            if exc.errno not in _NO_SPACE or not self._release_reserve(len(unwritten.data)):
                raise
        return self._write(unwritten)

    def _write(self, unwritten: _Unwritten) -> IO[bytes] | None:
        """Write the task's waiting bytes (its metadata first when due); their file (None: nothing waited)."""
        task_id, pending = unwritten.entry.task_id, unwritten.data
        if not pending:
            return self._files.get(task_id)
        fh = self._files.get(task_id)
        if fh is None:
            fh = self._files[task_id] = open(  # noqa: SIM115 (kept open across commits)
                unwritten.entry.directory / EVENTS_FILE, "ab", buffering=0, opener=private_opener
            )
        try:
            while pending:
                written = fh.write(pending)
                if not written:
                    raise OSError(errno.ENOSPC, "no byte written")
                del pending[:written]
        except OSError:
            del self._files[task_id]  # reopened on the next try
            with contextlib.suppress(OSError):
                fh.close()
            raise
        return fh

    def _write_failed(self, task_id: str, exc: OSError) -> None:
        if task_id not in self._write_errors:
            log.error("journal %s: cannot write (%s); its events wait until they can be written", task_id, exc)
        self._write_errors.add(task_id)

    def _spare_maker(self) -> None:
        while True:
            self._make_spares()
            self._spares_wanted.wait()
            self._spares_wanted.clear()
            if self._closing:
                break
        for spare in self._spares:
            shutil.rmtree(spare, ignore_errors=True)
        self._spares.clear()

    def _make_spares(self) -> None:
        """Spares thread: make task directories ahead, up to SPARE_DIRS (none while the disk is full)."""
        while len(self._spares) < SPARE_DIRS and not self._reserve_in_use and not self._closing:
            spare = self.root / f"{SPARE_PREFIX}{os.getpid()}-{next(self._spare_names)}"
            try:
                os.mkdir(spare, DIR_MODE)
                os.close(os.open(spare / EVENTS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
                os.mkdir(spare / WORK_DIR)
            except OSError as exc:
                shutil.rmtree(spare, ignore_errors=True)
                log.debug("journal: no task directory made ahead: %s", exc)
                return
            self._spares.append(spare)

    @property
    def _reserve_path(self) -> Path:
        return self.root / RESERVE_FILE

    def _make_reserve(self) -> None:
        """Set space aside for a full disk (writer thread); retried after each commit until it fits."""
        now = time.monotonic()
        if now < self._reserve_retry_at:
            return
        self._reserve_retry_at = now + 10.0
        tmp = self.root / (RESERVE_FILE + ".tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.root).free < 4 * RESERVE_BYTES:
                return
            with tmp.open("wb") as fh:
                fh.write(b"\0" * RESERVE_BYTES)  # real blocks, not a sparse file
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._reserve_path)
            if self._reserve_in_use:
                log.info("journal: space again under %s; its reserve is whole again", self.root)
            self._reserve_in_use = False
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("journal: could not set aside its %d MiB reserve: %s", RESERVE_BYTES >> 20, exc)

    def _release_reserve(self, need: int) -> bool:
        """Give back just enough of the reserve for `need` bytes (whole 64 KiB steps), so that other
        writers on the full disk get no room worth having; False once it is used up."""
        path = self._reserve_path
        try:
            size = path.stat().st_size
            if size == 0:
                return False
            keep = max(0, size - max(need + _RESERVE_STEP - 1, _RESERVE_STEP) // _RESERVE_STEP * _RESERVE_STEP)
            os.truncate(path, keep)
        except OSError:
            return False
        if not self._reserve_in_use:
            log.error("disk full under %s: writing task events into the journal's reserve", self.root)
        self._reserve_in_use = True
        return True

    def _written(self, updates: list[tuple[TaskLog, int]]) -> None:
        """What the writer thread wrote (on the loop)."""
        for entry, _ in updates:
            entry.on_disk = entry.writer_has_it = True
        self._committed(updates)

    def _committed(self, updates: list[tuple[TaskLog, int]]) -> None:
        for entry, seq in updates:
            entry.committed_seq = max(entry.committed_seq, seq)
            waiters, entry.changed = entry.changed, asyncio.Event()
            waiters.set()
            if entry.finished and entry.committed_seq == entry.last_seq:
                self._remember_finished(entry)

    def _remember_finished(self, entry: TaskLog) -> None:
        self._cached_finished[entry.task_id] = None
        while len(self._cached_finished) > _KEEP_IN_MEMORY:
            old, _ = self._cached_finished.popitem(last=False)
            if old in self._logs and old not in self._unwritten:  # only what is on disk may leave memory
                self._logs[old].records = None

    # ---- reading

    def get(self, task_id: str) -> TaskLog:
        try:
            return self._logs[task_id]
        except KeyError:
            raise NotFound(f"unknown task {task_id!r}") from None

    def entries(self) -> list[TaskLog]:
        return list(self._logs.values())

    async def watch(self, task_id: str, after_seq: int = 0) -> AsyncIterator[list[bytes]]:
        """Replay committed events with seq > after_seq, then follow until the task finishes: runs of records
        (consecutive seqs, at most BATCH_BYTES unless one record is more), each run one WatchTask message."""
        entry = self.get(task_id)
        records = entry.records
        cursor = max(0, after_seq)
        if records is None:  # finished long ago: only on disk
            on_disk, _ = await asyncio.to_thread(_read_journal, entry.directory / EVENTS_FILE)
            while cursor < len(on_disk):
                run, cursor = _run(on_disk, cursor, len(on_disk))
                yield run
            return
        while True:
            waiter = entry.changed
            while cursor < entry.committed_seq:
                run, cursor = _run(records, cursor, entry.committed_seq)
                yield run
            if entry.finished and cursor >= entry.last_seq:
                return
            await waiter.wait()


def _run(records: list[bytes], start: int, end: int) -> tuple[list[bytes], int]:
    """records[start:stop] up to BATCH_BYTES (at least one), and stop."""
    stop, size = start + 1, len(records[start])
    while stop < end and size + len(records[stop]) <= BATCH_BYTES:
        size += len(records[stop])
        stop += 1
    return records[start:stop], stop


def read_events(path: Path) -> list[TaskEvent]:
    """The events in a journal file (tasks/<task_id>/events.pb), also while it is written: a torn tail is left
    out. For tools and tests that look at an agent's data dir; the agent itself reads with _read_journal."""
    return _read_journal(path)[1]


def read_meta(directory: Path) -> dict[str, Any] | None:
    """A task journal's metadata (spec, slot ids, created_at, boot_id), from its events file or an older agent's
    task.json; None when it was never written."""
    if (directory / TASK_FILE).is_file():
        return dict(json.loads((directory / TASK_FILE).read_text()))
    return _read_task(directory / EVENTS_FILE)[0]


def _meta_record(meta: dict[str, Any]) -> bytes:
    """The metadata at the head of a journal file: its JSON framed as field META_FIELD."""
    return framed(META_FIELD, json.dumps(meta, separators=(",", ":")).encode())


def _split_meta(data: bytes) -> tuple[dict[str, Any] | None, int]:
    """The metadata a journal file starts with and where its events start; (None, 0) when it has none whole."""
    body = unframe(data, 0, META_FIELD)
    if body is None:
        return None, 0
    start, end = body
    return dict(json.loads(data[start:end])), end


def _read_task(path: Path, repair: bool = False) -> tuple[dict[str, Any] | None, list[bytes], list[TaskEvent]]:
    """A journal file's metadata, records and events (see _read_journal); no metadata: (None, [], [])."""
    if not path.exists():
        return None, [], []
    data = path.read_bytes()
    meta, start = _split_meta(data)
    if meta is None:
        return None, [], []
    records, events = _records(path, data, start, repair)
    return meta, records, events


def _read_journal(path: Path, repair: bool = False) -> tuple[list[bytes], list[TaskEvent]]:
    """A journal file's records and their events, after its metadata (none in an older agent's); a torn or
    unreadable tail (crash mid-write) is dropped (and cut off if repair)."""
    if not path.exists():
        return [], []
    data = path.read_bytes()
    meta = unframe(data, 0, META_FIELD)  # skipped, not read
    return _records(path, data, meta[1] if meta is not None else 0, repair)


def _records(path: Path, data: bytes, start: int, repair: bool) -> tuple[list[bytes], list[TaskEvent]]:
    records, good = split_records(data, start)
    events: list[TaskEvent] = []
    for record in records:
        try:
            (event,) = events_from_batch(record)
        except ValueError:
            break
        if event.seq != len(events) + 1:  # seqs run 1, 2, 3...: event n is record n
            break
        events.append(event)
    if len(events) < len(records):
        records = records[: len(events)]
        good = start + sum(map(len, records))
    if repair and good < len(data):
        log.warning("journal %s: dropping %d torn bytes at the end", path, len(data) - good)
        with path.open("r+b") as fh:
            fh.truncate(good)
    return records, events
