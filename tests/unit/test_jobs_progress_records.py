"""A job's "progress" job_state records (EventLog.progress): at most one per PROGRESS_EVERY per job, the last of a
burst always recorded (the trailing edge) unless another job_state carried the summary meanwhile, and every save and
job-list notice at once, as before."""

from __future__ import annotations

import asyncio
from typing import Any

from tensorfleet_desktop.controller import events as events_module
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobState, JobTask


class _Store:
    def __init__(self) -> None:
        self.records: list[JobEventRecord] = []
        self.saves: list[tuple[str, list[int] | None]] = []

    def save_job(self, job: Job, tasks: Any = None) -> None:
        self.saves.append((job.id, None if tasks is None else [t.index for t in tasks]))

    def append_events(self, records: list[JobEventRecord], cursors: dict[str, int]) -> None:
        self.records.extend(records)


class _Clock:
    def time(self) -> float:
        return 0.0


def _summaries(store: _Store) -> list[tuple[str, str]]:
    return [(r.state, r.message) for r in store.records if r.kind == "job_state"]


def test_a_burst_of_trial_ends_records_its_first_and_its_last_progress() -> None:
    async def scenario() -> None:
        store = _Store()
        log = EventLog(store, _Clock())  # type: ignore[arg-type]
        seen: list[str] = []
        log.add_job_listener(lambda job: seen.append(job.id))
        job = Job("j1", {}, "me", 1, state=JobState.RUNNING)
        job.tasks = [JobTask(index=i) for i in range(200)]
        for task in job.tasks:
            log.progress(job, (task,))  # 200 trials ending within a few milliseconds
        assert len(store.saves) == 200 and len(seen) == 200  # each saved and told to job lists at once
        assert _summaries(store) == [("RUNNING", "progress")]  # the first goes at once, the rest are held
        await asyncio.sleep(events_module.PROGRESS_EVERY * 1.6)
        assert _summaries(store) == [("RUNNING", "progress")] * 2  # the trailing one: the summary after the last
        log.progress(job, (job.tasks[0],))  # a period after: held, as the last record is recent
        job.state = JobState.SUCCEEDED
        log.job_changed(job, "succeeded")  # the end carries the summary: the held one is dropped
        await asyncio.sleep(events_module.PROGRESS_EVERY * 1.6)
        assert _summaries(store) == [("RUNNING", "progress")] * 2 + [("SUCCEEDED", "succeeded")]
        assert [r.seq for r in store.records] == list(range(1, 4))

    asyncio.run(scenario())


def test_jobs_are_held_back_each_on_its_own() -> None:
    async def scenario() -> None:
        store = _Store()
        log = EventLog(store, _Clock())  # type: ignore[arg-type]
        a, b = (Job(i, {}, "me", 1, state=JobState.RUNNING, tasks=[JobTask(index=0)]) for i in ("a", "b"))
        for _ in range(3):
            log.progress(a, a.tasks)
            log.progress(b, b.tasks)
        assert [r.job_id for r in store.records] == ["a", "b"]
        await asyncio.sleep(events_module.PROGRESS_EVERY * 1.6)
        assert sorted(r.job_id for r in store.records) == ["a", "a", "b", "b"]

    asyncio.run(scenario())


def test_off_the_loop_each_is_recorded() -> None:
    store = _Store()
    log = EventLog(store, _Clock())  # type: ignore[arg-type]
    job = Job("j", {}, "me", 1, state=JobState.RUNNING, tasks=[JobTask(index=0)])
    log.progress(job, job.tasks)
    log.progress(job, job.tasks)
    assert _summaries(store) == [("RUNNING", "progress")] * 2
