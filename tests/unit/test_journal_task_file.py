"""A task's task.json is the journal writer's (runtime/journal.py, Journal.create): RunTask waits for no file, yet a
watcher never has an event of a task that a restarted agent would not know."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from tensorfleet_agent.core.types import StateChanged, TaskState
from tensorfleet_agent.rpc.convert import events_from_batch
from tensorfleet_agent.runtime.journal import TASK_FILE, Journal


async def test_the_task_file_is_written_by_the_writer_before_the_first_event_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[str] = []
    replace = os.replace

    def replacing(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == TASK_FILE:
            writers.append(threading.current_thread().name)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replacing)
    journal = Journal(tmp_path)
    journal.start()
    entry = journal.create("t1", {"spec": {"job_id": "j"}})
    assert entry.directory.is_dir() and writers == []  # the caller's thread made the dir, no file
    journal.append("t1", StateChanged(TaskState.ACCEPTED, "slots [0]"))
    async for run in journal.watch("t1"):
        (event,) = events_from_batch(b"".join(run))
        assert event.seq == 1
        meta = json.loads((tmp_path / "t1" / TASK_FILE).read_text())  # there by the time a watcher has the event
        assert meta["spec"] == {"job_id": "j"} and meta["created_at"] == entry.created_at
        break
    assert writers == ["journal-writer"]
    await journal.close()
    again = Journal(tmp_path)
    (loaded,) = again.load()
    assert loaded.task_id == "t1" and loaded.state is TaskState.ACCEPTED and loaded.meta == entry.meta


async def test_a_task_dir_the_writer_never_gave_a_task_file_is_removed_at_the_next_start(tmp_path: Path) -> None:
    """The agent stopped between RunTask and the writer's first write (a full disk holds it back): the dir, and
    what the task wrote under it, would otherwise stay for ever (nothing can resume or prune it)."""
    journal = Journal(tmp_path)
    journal.start()
    journal.create("kept", {"spec": {"job_id": "j"}})
    journal.append("kept", StateChanged(TaskState.ACCEPTED, "slots [0]"))
    await journal.close()
    orphan = tmp_path / "orphan" / "work"
    orphan.mkdir(parents=True)
    (orphan / "model.bin").write_bytes(b"x" * 1000)
    loaded = Journal(tmp_path).load()
    assert [e.task_id for e in loaded] == ["kept"] and not (tmp_path / "orphan").exists()
