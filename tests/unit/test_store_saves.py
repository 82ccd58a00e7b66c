"""A job saved several times in one turn of the event loop is copied and written once, as it is at the end of that
turn (store/engine.py, QueuedStore.save_job); what is stored is the same as when every save was written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobState, JobTask, TaskRunState, task_dict
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore


def _job(job_id: str = "j1", tasks: int = 3) -> Job:
    return Job(
        id=job_id, spec={"algorithm": "noop"}, submitter="u", seq_no=1, tasks=[JobTask(index=i) for i in range(tasks)]
    )


async def _reopened(path: Path) -> dict[str, Job]:
    store = SqliteJobStore(path)
    await store.open()
    try:
        return {j.id: j for j in await store.load_jobs()}
    finally:
        await store.close()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job id of every job row the writer writes."""
    written: list[str] = []
    real = SqliteJobStore._write_job

    def write(self: SqliteJobStore, conn: Any, write: Any, new: bool) -> None:
        written.append(write.job_id)
        real(self, conn, write, new)

    monkeypatch.setattr(SqliteJobStore, "_write_job", write)
    return written


async def test_saves_in_one_turn_are_one_write_of_the_last_state(tmp_path: Path, counted: list[str]) -> None:
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    job, other = _job("j1"), _job("j2")
    await store.insert_job(job)
    await store.insert_job(other)
    counted.clear()

    job.state = JobState.RUNNING
    job.tasks[0].state = TaskRunState.DISPATCHED
    store.save_job(job, (job.tasks[0],))  # a dispatch: the task's row, then the job's summary
    job.tasks[1].state = TaskRunState.DISPATCHED
    store.save_job(job, (job.tasks[1],))
    other.state = JobState.RUNNING
    store.save_job(other)
    job.tasks[0].state = TaskRunState.RUNNING
    job.metrics = {"loss": 0.25}
    store.save_job(job, (job.tasks[0],))
    await asyncio.sleep(0)  # the turn ends
    job.tasks[2].state = TaskRunState.DISPATCHED  # a later turn's change, saved in that turn
    store.save_job(job, (job.tasks[2],))
    await store.flush()
    await store.close()

    assert counted == ["j1", "j2", "j1"]  # one write per job and turn, in the order of their first save
    stored = await _reopened(tmp_path / "tf.db")
    assert stored["j1"].to_dict() == job.to_dict()
    assert stored["j2"].to_dict() == other.to_dict()


async def test_a_job_saved_then_deleted_in_one_turn_stays_deleted(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    job, kept = _job("j1"), _job("j2")
    await store.insert_job(job)
    await store.insert_job(kept)
    job.state = JobState.CANCELLED
    store.save_job(job)
    kept.state = JobState.SUCCEEDED
    store.save_job(kept)
    await store.delete_job("j1")
    await store.close()
    stored = await _reopened(tmp_path / "tf.db")
    assert list(stored) == ["j2"] and stored["j2"].state is JobState.SUCCEEDED


async def test_saves_not_flushed_are_written_at_close(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    job = _job()
    await store.insert_job(job)
    job.state = JobState.FAILED
    job.error = "rank 0 failed"
    store.save_job(job)
    await store.close()  # in the same turn as the save
    assert (await _reopened(tmp_path / "tf.db"))["j1"].error == "rank 0 failed"


def test_a_save_off_the_event_loop_is_copied_at_once(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "tf.db")
    asyncio.run(store.open())
    job = _job()
    job.state = JobState.RUNNING
    store.save_job(job)  # no loop runs here
    job.state = JobState.SUCCEEDED  # after the save: not part of it
    asyncio.run(store.close())
    assert asyncio.run(_reopened(tmp_path / "tf.db"))["j1"].state is JobState.RUNNING


async def test_awaited_writes_sharing_a_commit_are_answered_in_one_wake_up(tmp_path: Path) -> None:
    """100 concurrent submits' inserts: each caller gets its answer (a refused one its own error), and the writer
    wakes the loop once per committed group, not once per caller."""
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    loop = asyncio.get_running_loop()
    wakes: list[int] = []
    real = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        wakes.append(1)
        return real(*args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
    try:
        await store.insert_job(_job("j0"))
        wakes.clear()
        results = await asyncio.gather(*(store.insert_job(_job(f"j{i}")) for i in range(100)), return_exceptions=True)
    finally:
        loop.call_soon_threadsafe = real  # type: ignore[method-assign]
    assert isinstance(results[0], Exception), "j0 is stored already: its insert is refused"
    assert results[1:] == [None] * 99
    assert 1 <= len(wakes) <= 50, f"{len(wakes)} wake-ups for 100 awaited writes"
    await store.close()
    assert sorted(await _reopened(tmp_path / "tf.db")) == sorted(f"j{i}" for i in range(100))


async def test_events_of_one_turn_are_one_write_with_each_attempts_highest_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = SqliteJobStore._write_events

    def write(self: SqliteJobStore, conn: Any, rows: list[dict[str, Any]], cursors: dict[str, int]) -> None:
        writes.append(len(rows))
        real(self, conn, rows, cursors)

    monkeypatch.setattr(SqliteJobStore, "_write_events", write)
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    job = _job(tasks=1)
    job.tasks[0].agent_task_id = "j1-r0-a1"
    await store.insert_job(job)
    for seq in (1, 3, 2):  # a cursor never goes back
        event = JobEventRecord("j1", seq, 1.0, "log", 0, attempt_id="j1-r0-a1", agent_seq=seq, message=f"line {seq}")
        store.append_events([event], {"j1-r0-a1": seq})
    await store.flush()
    assert writes == [3]
    assert [e.message for e in await store.events("j1")] == ["line 1", "line 2", "line 3"]
    await store.close()
    assert (await _reopened(tmp_path / "tf.db"))["j1"].tasks[0].cursor == 3


async def test_a_jobs_end_is_queued_before_the_save_returns(tmp_path: Path) -> None:
    """A client may be told of a job's end before the loop turn ends (its call's steps run first: fair_loop.py):
    the end goes to the writer at once, with the events recorded before it."""
    store = SqliteJobStore(tmp_path / "tf.db")
    await store.open()
    job = _job(tasks=1)
    await store.insert_job(job)
    queued: list[object] = []
    put = store._put

    def counted(item: Any) -> None:
        queued.append(item)
        put(item)

    store._put = counted  # type: ignore[method-assign]
    store.append_events([JobEventRecord("j1", 1, 1.0, "job_state", state="SUCCEEDED")], {})
    job.state = JobState.RUNNING
    store.save_job(job)
    assert queued == [], "a running job's save waits for the end of the turn"
    job.state = JobState.SUCCEEDED
    store.save_job(job)
    assert len(queued) == 2, "the events and the job's end are queued for the writer now, not at the end of the turn"
    await store.close()
    stored = await _reopened(tmp_path / "tf.db")
    assert stored["j1"].state is JobState.SUCCEEDED and stored["j1"].last_event_seq == 1


def test_a_saved_summary_is_a_deep_copy_the_job_cannot_change_afterwards() -> None:
    spec = {"algorithm": "noop", "hyperparameters": {"depth": [1, 2, {"x": 1.5}]}, "cv": None, "tags": ("a",)}
    job = Job(id="j1", spec=spec, submitter="u", seq_no=1, tasks=[JobTask(index=0, params={"depth": [3]})])
    summary, row = job.summary_dict(), task_dict(job.tasks[0])
    assert summary["spec"] == spec and summary["spec"]["tags"] == ("a",)
    spec["hyperparameters"]["depth"][2]["x"] = 9.0  # the job's spec and params change after the save
    assert job.tasks[0].params is not None
    job.tasks[0].params["depth"].append(4)
    assert summary["spec"]["hyperparameters"]["depth"][2] == {"x": 1.5}
    assert row["params"] == {"depth": [3]}
