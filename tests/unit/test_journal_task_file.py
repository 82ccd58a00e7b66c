"""A task's metadata is the journal writer's (runtime/journal.py, Journal.create): RunTask waits for no file, yet a
watcher never has an event of a task that a restarted agent would not know. It heads the task's events file (one
file per task); an older agent's journal, with its task.json beside, is read as before."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tensorfleet_agent.core.types import Finished, MetricPoint, StateChanged, TaskEvent, TaskState
from tensorfleet_agent.rpc.convert import event_record, events_from_batch
from tensorfleet_agent.runtime import journal as journal_module
from tensorfleet_agent.runtime.journal import EVENTS_FILE, TASK_FILE, Journal, read_events, read_meta
from tensorfleet_agent.security.files import private_opener


async def test_the_metadata_is_written_by_the_writer_with_the_first_event_before_it_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[str] = []

    def opening(path: str, flags: int) -> int:
        writers.append(threading.current_thread().name)
        return private_opener(path, flags)

    monkeypatch.setattr(journal_module, "private_opener", opening)
    # no dir made ahead (a burst took them all): whether the spares thread had made one by create() was a race
    monkeypatch.setattr(journal_module, "SPARE_DIRS", 0)
    journal = Journal(tmp_path)
    journal.start()
    entry = journal.create("t1", {"spec": {"job_id": "j"}})
    assert entry.directory.is_dir() and writers == []  # the caller's thread made the dir, no file
    journal.append("t1", StateChanged(TaskState.ACCEPTED, "slots [0]"))
    async for run in journal.watch("t1"):
        (event,) = events_from_batch(b"".join(run))
        assert event.seq == 1
        meta = read_meta(tmp_path / "t1")  # there by the time a watcher has the event
        assert meta is not None and meta["spec"] == {"job_id": "j"} and meta["created_at"] == entry.created_at
        break
    journal.append("t1", MetricPoint(0, "x", 1.0, 0.0))
    await journal.close()
    assert writers == ["journal-writer"]  # one file created, by the writer
    assert sorted(p.name for p in (tmp_path / "t1").iterdir()) == [EVENTS_FILE]
    assert os.stat(tmp_path / "t1" / EVENTS_FILE).st_mode & 0o777 == 0o600
    path = tmp_path / "t1" / EVENTS_FILE
    assert [e.seq for e in read_events(path)] == [1, 2]
    assert [e.seq for e in events_from_batch(path.read_bytes())] == [1, 2]  # still one TaskEventBatch
    again = Journal(tmp_path)
    (loaded,) = again.load()
    assert loaded.task_id == "t1" and loaded.state is TaskState.ACCEPTED and loaded.meta == entry.meta
    assert loaded.last_seq == 2


async def test_a_task_dir_the_writer_never_gave_its_metadata_is_removed_at_the_next_start(tmp_path: Path) -> None:
    """The agent stopped between RunTask and the writer's first write (a full disk holds it back, or it died
    between the file's creation and its write): the dir, and what the task wrote under it, would otherwise stay
    for ever (nothing can resume or prune it)."""
    journal = Journal(tmp_path)
    journal.start()
    journal.create("kept", {"spec": {"job_id": "j"}})
    journal.append("kept", StateChanged(TaskState.ACCEPTED, "slots [0]"))
    await journal.close()
    orphan = tmp_path / "orphan" / "work"
    orphan.mkdir(parents=True)
    (orphan / "model.bin").write_bytes(b"x" * 1000)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / EVENTS_FILE).write_bytes(b"")
    loaded = Journal(tmp_path).load()
    assert [e.task_id for e in loaded] == ["kept"]
    assert not (tmp_path / "orphan").exists() and not (tmp_path / "empty").exists()


async def test_an_older_agents_journal_with_its_task_file_is_read_resumed_and_replayed(tmp_path: Path) -> None:
    directory = tmp_path / "old"
    directory.mkdir()
    meta = {"spec": {"job_id": "j", "workload": "noop"}, "slot_ids": [0], "created_at": 12.0}
    (directory / TASK_FILE).write_text(json.dumps(meta))
    (directory / TASK_FILE).chmod(0o644)  # older versions left it world-readable
    records = [
        event_record(TaskEvent("old", 1, 1.0, StateChanged(TaskState.ACCEPTED, "slots [0]"))),
        event_record(TaskEvent("old", 2, 2.0, StateChanged(TaskState.RUNNING, "worker pid 1"))),
    ]
    (directory / EVENTS_FILE).write_bytes(b"".join(records))
    assert read_meta(directory) == meta
    journal = Journal(tmp_path)
    (loaded,) = journal.load()
    assert loaded.meta == meta and loaded.created_at == 12.0 and loaded.last_seq == 2 and not loaded.finished
    assert os.stat(directory / TASK_FILE).st_mode & 0o777 == 0o600
    journal.start()
    journal.append("old", Finished(TaskState.FAILED, "agent_restarted"))
    seqs = [e.seq async for run in journal.watch("old") for e in events_from_batch(b"".join(run))]
    await journal.close()
    assert seqs == [1, 2, 3]
    assert [e.seq for e in read_events(directory / EVENTS_FILE)] == [1, 2, 3]
