"""The journal: group commit, replay after seq, torn tails, restart recovery, retention."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from helpers.waiting import eventually
from tensorfleet_agent.core.errors import NotFound
from tensorfleet_agent.core.types import Finished, LogLine, MetricPoint, StateChanged, TaskEvent, TaskState
from tensorfleet_agent.rpc.convert import event_record, events_from_batch
from tensorfleet_agent.runtime import journal as journal_module
from tensorfleet_agent.runtime.journal import (
    AT_ONCE,
    EVENTS_FILE,
    RESERVE_BYTES,
    RESERVE_FILE,
    SPARE_DIRS,
    SPARE_PREFIX,
    WORK_DIR,
    Journal,
    read_events,
    read_meta,
)


async def _collect(journal: Journal, task_id: str, after: int = 0) -> list[int]:
    return [e.seq async for run in journal.watch(task_id, after) for e in events_from_batch(b"".join(run))]


def _on_disk(path: Path) -> list[int]:
    """The seqs in a journal file, read as the one TaskEventBatch it is."""
    return [e.seq for e in events_from_batch(path.read_bytes())]


async def test_append_replay_and_follow(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    journal.create("t1", {"spec": {}})
    journal.append("t1", StateChanged(TaskState.RUNNING))
    follower = asyncio.create_task(_collect(journal, "t1"))
    for step in range(100):
        journal.append("t1", MetricPoint(step, "x", float(step), 0.0))
    journal.append("t1", Finished(TaskState.SUCCEEDED, "completed"))
    assert await asyncio.wait_for(follower, 5) == list(range(1, 103))
    assert await _collect(journal, "t1", after=100) == [101, 102]
    replay = [run async for run in journal.watch("t1")]
    assert len(replay) == 1, "a replay sends many events per message"
    await journal.close()
    assert _on_disk(tmp_path / "t1" / EVENTS_FILE) == list(range(1, 103))
    again = Journal(tmp_path)
    again.load()
    assert await _collect(again, "t1", after=1) == list(range(2, 103))  # from the file


async def test_watchers_only_see_committed_events(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    journal.create("t", {})
    journal.append("t", StateChanged(TaskState.RUNNING))
    entry = journal.get("t")
    seen = []

    async def watch() -> None:
        async for run in journal.watch("t"):
            for event in events_from_batch(b"".join(run)):
                seen.append(event.seq)
                # whatever a watcher receives must already be on disk
                assert len(read_events(tmp_path / "t" / EVENTS_FILE)) >= event.seq

    task = asyncio.create_task(watch())
    for i in range(50):
        journal.append("t", MetricPoint(i, "x", 1.0, 0.0))
        if i % 7 == 0:
            await asyncio.sleep(0)
    journal.append("t", Finished(TaskState.SUCCEEDED, "completed"))
    await asyncio.wait_for(task, 5)
    assert seen == list(range(1, entry.last_seq + 1))
    await journal.close()


async def test_reload_repairs_torn_tail_and_finds_unfinished(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    journal.create("done", {})
    journal.append("done", Finished(TaskState.SUCCEEDED, "completed"))
    journal.create("running", {})
    journal.append("running", StateChanged(TaskState.RUNNING))
    journal.append("running", MetricPoint(0, "x", 1.0, 0.0))
    await journal.close()
    with (tmp_path / "running" / EVENTS_FILE).open("ab") as fh:
        fh.write(event_record(TaskEvent("running", 3, 1.0, MetricPoint(1, "x", 2.0, 1.0)))[:9])  # crash mid-write
    assert [e.seq for e in read_events(tmp_path / "running" / EVENTS_FILE)] == [1, 2]

    again = Journal(tmp_path)
    loaded = {e.task_id: e for e in again.load()}
    assert loaded["done"].finished and loaded["done"].state is TaskState.SUCCEEDED
    assert not loaded["running"].finished and loaded["running"].last_seq == 2
    again.start()
    again.append("running", Finished(TaskState.FAILED, "agent_restarted"))
    assert await _collect(again, "running") == [1, 2, 3]
    assert await _collect(again, "done") == [1]
    await again.close()
    assert _on_disk(tmp_path / "running" / EVENTS_FILE) == [1, 2, 3]


async def test_prune_by_age_and_count(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    for i in range(5):
        journal.create(f"t{i}", {})
        journal.append(f"t{i}", Finished(TaskState.SUCCEEDED, "completed"))
    journal.create("live", {})
    await journal.close()
    journal.get("t0").finished_at = time.time() - 3600
    assert journal.prune(max_age_seconds=60, max_finished=3) == 2
    remaining = sorted(p.name for p in await asyncio.to_thread(lambda: list(tmp_path.glob("[!.]*"))))
    assert remaining == ["live", "t2", "t3", "t4"]


async def test_a_full_disk_releases_the_reserve_then_waits_for_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes to /dev/full fail with ENOSPC, as on a full disk. Watchers only ever get what is on disk;
    everything is written and streamed, in order, once there is space again. (No directories made ahead here: every
    first write goes through the writer, whose commits this test orders by.)"""
    monkeypatch.setattr(journal_module, "SPARE_DIRS", 0)
    journal = Journal(tmp_path)
    journal.start()
    journal.create("t", {})
    events = tmp_path / "t" / EVENTS_FILE
    events.unlink(missing_ok=True)  # the writer makes it with the first event
    events.symlink_to("/dev/full")
    reserve = tmp_path / RESERVE_FILE
    await eventually(lambda: reserve.exists() and reserve.stat().st_size == RESERVE_BYTES, 10, "the reserve")
    journal.append("t", StateChanged(TaskState.RUNNING))
    for i in range(20):
        journal.append("t", MetricPoint(i, "x", 1.0, 0.0))
    journal.append("t", Finished(TaskState.FAILED, "exception", "OSError: [Errno 28] No space left on device"))
    seen: list[int] = []

    async def watch() -> list[int]:
        async for run in journal.watch("t"):
            seen.extend(e.seq for e in events_from_batch(b"".join(run)))
        return seen

    watcher = asyncio.create_task(watch())
    # A task appended after t, on a journal that can be written: once its events reach its watcher, the writer
    # has tried t's (committed in order, watchers told in order) and any wrong word about them has arrived.
    journal.create("later", {})
    journal.append("later", Finished(TaskState.SUCCEEDED, "completed"))
    assert await asyncio.wait_for(_collect(journal, "later"), 10) == [1]
    await asyncio.sleep(0)  # (a yield, not a wait: t's watcher runs if it was woken with "later"'s)
    assert seen == [] and not watcher.done()  # nothing beyond what is on disk
    assert reserve.stat().st_size < RESERVE_BYTES  # some given back (no use against /dev/full)
    events.unlink()  # space again
    events.touch()
    assert await asyncio.wait_for(watcher, 10) == list(range(1, 23))
    await journal.close()
    assert _on_disk(events) == list(range(1, 23))


async def test_a_task_is_accepted_and_its_events_streamed_without_waiting_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written to the kernel is enough (an agent crash keeps it): no fsync on the path of a task, which cost ~7 ms
    per commit ('Nothing is lost')."""
    synced: list[str] = []  # the files synced (the full-disk reserve is, once, off the path of any task)

    def sync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", sync)
    monkeypatch.setattr(os, "fdatasync", sync)
    journal = Journal(tmp_path)
    journal.start()
    journal.create("t1", {"spec": {}})
    journal.append("t1", StateChanged(TaskState.RUNNING))
    journal.append("t1", Finished(TaskState.SUCCEEDED, "completed"))
    assert await asyncio.wait_for(_collect(journal, "t1"), 5) == [1, 2]
    await journal.close()
    assert [path for path in synced if RESERVE_FILE not in path] == []
    assert _on_disk(tmp_path / "t1" / EVENTS_FILE) == [1, 2]


async def test_a_task_running_when_the_machine_went_down_is_forgotten_not_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reboot its journal may have lost events its controller saw: an end journaled now could reuse a seq
    the controller holds. Unknown instead, it is re-placed. Finished tasks and a restart of the agent alone keep
    their journals."""
    journal = Journal(tmp_path)
    journal.start()
    for task_id in ("ran", "done"):
        journal.create(task_id, {})
        journal.append(task_id, StateChanged(TaskState.RUNNING))
    journal.append("done", Finished(TaskState.SUCCEEDED, "completed"))
    await journal.close()

    same_boot = {e.task_id for e in Journal(tmp_path).load()}
    assert same_boot == {"ran", "done"}
    monkeypatch.setattr(journal_module, "boot_id", lambda: "another-boot")
    after_reboot = Journal(tmp_path)
    assert {e.task_id for e in after_reboot.load()} == {"done"}
    assert not (tmp_path / "ran").exists()
    with pytest.raises(NotFound):
        after_reboot.get("ran")


def _spares(root: Path) -> set[Path]:
    return set(root.glob(SPARE_PREFIX + "*"))


async def _with_spares(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path)
    journal.start()
    await eventually(lambda: len(_spares(tmp_path)) == SPARE_DIRS, 10, "the spare directories")
    return journal


async def test_a_task_takes_a_directory_made_ahead_and_its_first_event_is_on_disk_at_once(tmp_path: Path) -> None:
    """No inode is made on a task's path: its directory, events file and work dir were made ahead, and its first
    event (with the metadata) is on disk, for watchers, as it is journaled."""
    journal = await _with_spares(tmp_path)
    spares = _spares(tmp_path)
    entry = journal.create("t1", {"spec": {"x": 1}})
    assert entry.directory == tmp_path / "t1" and (tmp_path / "t1" / WORK_DIR).is_dir()
    assert len(spares - _spares(tmp_path)) == 1  # one of them, renamed
    journal.append("t1", StateChanged(TaskState.ACCEPTED, "slots [0]"))
    assert entry.committed_seq == 1 and _on_disk(tmp_path / "t1" / EVENTS_FILE) == [1]  # no writer turn awaited
    assert read_meta(tmp_path / "t1") == entry.meta
    journal.append("t1", StateChanged(TaskState.RUNNING))
    journal.append("t1", Finished(TaskState.SUCCEEDED, "completed"))
    assert await asyncio.wait_for(_collect(journal, "t1"), 5) == [1, 2, 3]
    await eventually(lambda: len(_spares(tmp_path)) == SPARE_DIRS, 10, "another made ahead")
    await journal.close()
    assert _on_disk(tmp_path / "t1" / EVENTS_FILE) == [1, 2, 3]
    assert not _spares(tmp_path)  # a stopping agent leaves none behind
    (tmp_path / f"{SPARE_PREFIX}left-by-a-crash").mkdir()
    assert [e.task_id for e in Journal(tmp_path).load()] == ["t1"]  # a spare is no task, and goes at load
    assert not _spares(tmp_path)


async def test_a_first_write_that_fails_is_left_to_the_writer(tmp_path: Path) -> None:
    """A full disk at a task's first event: nothing half written; the writer writes it once there is room."""
    journal = await _with_spares(tmp_path)
    journal.create("t", {})
    events = tmp_path / "t" / EVENTS_FILE
    events.unlink()
    events.symlink_to("/dev/full")
    journal.append("t", StateChanged(TaskState.ACCEPTED, "slots [0]"))
    journal.append("t", Finished(TaskState.SUCCEEDED, "completed"))
    watcher = asyncio.create_task(_collect(journal, "t"))
    await asyncio.sleep(0.2)
    assert not watcher.done() and journal.get("t").committed_seq == 0
    events.unlink()  # space again
    events.touch()
    assert await asyncio.wait_for(watcher, 10) == [1, 2]
    await journal.close()
    assert _on_disk(events) == [1, 2] and read_meta(tmp_path / "t") == journal.get("t").meta


async def test_a_short_task_is_written_at_once_and_a_long_one_s_bursts_by_the_writer(tmp_path: Path) -> None:
    """A task's first events (a short task's start, its line and its end: the path of every task) reach the disk and
    its watchers as they are journaled; later ones go to the writer, and nothing overtakes what it holds."""
    journal = await _with_spares(tmp_path)
    quick = journal.create("quick", {})
    for payload in (
        StateChanged(TaskState.ACCEPTED, ""),
        StateChanged(TaskState.RUNNING),
        LogLine("agent", "reproducibility: ..."),
        Finished(TaskState.SUCCEEDED, "completed"),
    ):
        journal.append("quick", payload)
    assert quick.committed_seq == 4 and _on_disk(tmp_path / "quick" / EVENTS_FILE) == [1, 2, 3, 4]

    long = journal.create("long", {})
    journal.append("long", StateChanged(TaskState.ACCEPTED, ""))
    for step in range(AT_ONCE + 20):
        journal.append("long", MetricPoint(step, "x", 1.0, 0.0))
    assert long.committed_seq == AT_ONCE  # the rest waits for the writer, in one write
    journal.append("long", Finished(TaskState.SUCCEEDED, "completed"))
    assert long.committed_seq == AT_ONCE  # behind what the writer holds: not at once
    assert await asyncio.wait_for(_collect(journal, "long"), 10) == list(range(1, AT_ONCE + 23))
    await journal.close()
    assert _on_disk(tmp_path / "long" / EVENTS_FILE) == list(range(1, AT_ONCE + 23))
    assert {e.task_id: e.last_seq for e in Journal(tmp_path).load()} == {"quick": 4, "long": AT_ONCE + 22}


async def test_an_end_written_at_once_closes_the_writer_s_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task whose first event the writer wrote (no directory made ahead) keeps its file open there; an end
    written at once has it closed: no file handle is left behind per task."""
    monkeypatch.setattr(journal_module, "SPARE_DIRS", 0)
    journal = Journal(tmp_path)
    journal.start()
    entry = journal.create("t", {})
    journal.append("t", StateChanged(TaskState.ACCEPTED, ""))
    await eventually(lambda: entry.committed_seq == 1, 10, "the writer's commit")
    assert "t" in journal._files
    journal.append("t", StateChanged(TaskState.RUNNING))
    journal.append("t", Finished(TaskState.SUCCEEDED, "completed"))
    assert entry.committed_seq == 3  # at once
    await eventually(lambda: "t" not in journal._files, 10, "the writer's handle closed")
    await journal.close()
    assert _on_disk(tmp_path / "t" / EVENTS_FILE) == [1, 2, 3]
