"""The jobs index answers every jobs page as sorting and filtering all jobs did: ListJobs (newest first, jobs of
one instant in the order they came) and GET /api/v1/jobs (newest (created_at, id) first, cursor and page-number
forms), through adds, state changes, replacements and deletions, ties included."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.http.jobs import index_page
from tensorfleet_desktop.controller.http.paging import Page, encode_cursor, paginate
from tensorfleet_desktop.controller.job_index import JobTable
from tensorfleet_desktop.controller.model import Job, JobState

STATES = [s.value for s in JobState]


def _job(job_id: str, created_at: float, state: JobState = JobState.QUEUED) -> Job:
    return Job(id=job_id, spec={"algorithm": "noop"}, submitter="me", seq_no=0, created_at=created_at, state=state)


def _grpc_before(table: JobTable, states: tuple[str, ...], limit: int) -> list[Job]:
    """ListJobs before the index: a stable sort of every job, filtered, cut."""
    jobs = sorted(table.values(), key=lambda j: j.created_at, reverse=True)
    jobs = [j for j in jobs if not states or j.state.value in states]
    return jobs[:limit] if limit > 0 else jobs


def _key(job: Job) -> tuple[float, str]:
    return (job.created_at, job.id)


def _http_before(table: JobTable, states: tuple[str, ...], limit: int, cursor: str | None, page: int | None) -> Any:
    jobs = [j for j in table.values() if not states or j.state.value in states]
    jobs.sort(key=_key, reverse=True)
    return _answer(lambda: paginate(jobs, _key, limit, cursor, page))


def _http_now(table: JobTable, states: tuple[str, ...], limit: int, cursor: str | None, page: int | None) -> Any:
    return _answer(lambda: index_page(table, states, limit, cursor, page))


def _answer(fn: Any) -> Any:
    """A page as ids, or the error a client gets."""
    try:
        page: Page[Job] = fn()
    except ValidationError as exc:
        return ("error", str(exc))
    return ([j.id for j in page.items], page.total, page.next_cursor, page.page)


def _check(table: JobTable, rng: random.Random) -> None:
    for _ in range(12):
        states = tuple(rng.sample(STATES, rng.choice([0, 0, 1, 1, 2, 3])))
        limit = rng.choice([0, 1, 2, 3, 7, 50])
        assert [j.id for j in table.newest(states, limit)] == [j.id for j in _grpc_before(table, states, limit)]
        size = rng.choice([1, 2, 3, 5])
        jobs = list(table.values())
        cursors: list[str | None] = [None, encode_cursor([0.5, "x"]), encode_cursor([99.0, ""])]
        cursors += [encode_cursor(_key(rng.choice(jobs))) for _ in range(3)] if jobs else []
        cursors += [encode_cursor(["a", 1]), encode_cursor([float("nan"), "j"]), encode_cursor([1.0]), "%%%"]
        for cursor in cursors:
            assert _http_now(table, states, size, cursor, None) == _http_before(table, states, size, cursor, None)
        for page in (1, 2, 5, 40):
            assert _http_now(table, states, size, None, page) == _http_before(table, states, size, None, page)
        assert _http_now(table, states, size, "x", 1) == _http_before(table, states, size, "x", 1)


@pytest.mark.parametrize("seed", range(6))
def test_pages_from_the_index_are_the_pages_a_full_sort_gave(seed: int) -> None:
    rng = random.Random(seed)
    table = JobTable()
    made = 0
    for _ in range(150):
        op = rng.random()
        if op < 0.45 or not table:  # created in few distinct instants: many ties
            made += 1
            job_id = f"j{rng.randrange(10**6):06d}"
            if job_id not in table:
                table[job_id] = _job(job_id, float(rng.randrange(12)), rng.choice(list(JobState)))
        elif op < 0.8:  # a change of state, told to the listener as EventLog.job_changed does
            job = table[rng.choice(list(table))]
            job.state = rng.choice(list(JobState))
            table.touched(job)
        elif op < 0.9:
            del table[rng.choice(list(table))]
        elif op < 0.95:  # deleted, then put back (DeleteJob that could not be saved): last among its ties
            job_id = rng.choice(list(table))
            job = table.pop(job_id)
            table[job_id] = job
        else:  # the same id set again: keeps its place
            job_id = rng.choice(list(table))
            table[job_id] = _job(job_id, table[job_id].created_at, rng.choice(list(JobState)))
        if rng.random() < 0.25:
            _check(table, rng)
    _check(table, rng)
    assert made > 40


def test_a_state_change_nobody_told_is_filtered_as_before_and_filed_anew() -> None:
    table = JobTable()
    for i in range(5):
        table[f"j{i}"] = _job(f"j{i}", float(i))
    table["j3"].state = JobState.RUNNING  # no listener told
    assert [j.id for j in table.newest(("QUEUED",))] == ["j4", "j2", "j1", "j0"]
    assert [j.id for j in table.newest(("RUNNING",))] == ["j3"]  # filed under its state by that read
    assert table.count(("QUEUED",)) == 4


def test_the_job_machine_files_jobs_by_the_state_every_change_reports(tmp_path: Any) -> None:
    """Through the core: a queued job that starts and ends moves between the state lists ListJobs reads."""
    from tensorfleet_desktop.controller.events import EventLog
    from tensorfleet_desktop.controller.jobs import JobMachine
    from tensorfleet_desktop.controller.metrics import ControllerMetrics

    class _Store:
        def save_job(self, *args: Any) -> None: ...
        def append_events(self, *args: Any) -> None: ...

    class _Clock:
        now = 100.0

        def time(self) -> float:
            self.now += 1.0
            return self.now

        def monotonic(self) -> float:
            return self.now

    async def scenario() -> None:
        machine = JobMachine(EventLog(_Store(), _Clock()), _Clock(), ControllerMetrics(), 3)  # type: ignore[arg-type]
        jobs = [_job(f"j{i}", 1.0 + i) for i in range(3)]
        for job in jobs:
            machine.admit(job)
        assert [j.id for j in machine.list_jobs(("QUEUED",), 2)] == ["j2", "j1"]
        jobs[2].state = JobState.RUNNING
        machine.events.job_changed(jobs[2], "started")
        machine.finish(jobs[1], JobState.FAILED, "boom")
        assert [j.id for j in machine.list_jobs(("QUEUED",))] == ["j0"]
        assert [j.id for j in machine.list_jobs(("RUNNING", "FAILED"))] == ["j2", "j1"]
        assert machine.jobs.count(("FAILED",)) == 1
        machine.remove(jobs[1])
        assert [j.id for j in machine.list_jobs()] == ["j2", "j0"]

    asyncio.run(scenario())
