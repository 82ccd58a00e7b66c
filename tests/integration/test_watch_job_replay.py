"""WatchJob on a long history: the replay is read from the store a page at a time (the first events go out before
the whole history is read), and the live events that arrive meanwhile follow it with no gap and no repeat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, record_seqs
from helpers.fake_agents import FakeClock
from helpers.servers import start_secantus
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.controller import events as events_module
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobState, JobTask, TaskRunState
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.store.base import JobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore

PAGE = 500
ATTEMPT = "j1-r0-a1"


@pytest.fixture
async def log(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EventLog]:
    """An EventLog over each store: MongoDB's bulk insert is no transaction, a page may show part of one."""
    monkeypatch.setattr(events_module, "REPLAY_PAGE", PAGE)
    server = None
    if getattr(request, "param", "sqlite") == "sqlite":
        store: JobStore = SqliteJobStore(tmp_path / "tf.db")
    else:
        server, uri = start_secantus(tmp_path / "secantus")
        store = open_store(f"{uri}/tf_replay")
    await store.open()
    yield EventLog(store, FakeClock())
    await store.close()
    if server is not None:
        server.stop()


def _job() -> Job:
    task = JobTask(index=0, state=TaskRunState.RUNNING, agent_task_id=ATTEMPT, attempt=1)
    return Job(id="j1", spec={"algorithm": "emit"}, submitter="me@here", seq_no=1, created_at=1.0, tasks=[task])


def _points(log: EventLog, job: Job, n: int) -> None:
    for _ in range(n):
        step = job.last_event_seq + 1
        base = {"task_index": 0, "attempt_id": ATTEMPT, "agent_seq": step}
        log.record(job, "metric", base, name="loss", step=step, value=1.0 / step)


@pytest.mark.parametrize("log", ["sqlite", pytest.param("mongodb", marks=pytest.mark.slow)], indirect=True)
async def test_replay_reads_pages_and_live_events_follow_with_no_gap_or_repeat(log: EventLog) -> None:
    job = _job()
    job.state = JobState.RUNNING
    log.store.save_job(job)
    _points(log, job, 5 * PAGE + 123)  # the stored history: more than five pages
    await log.store.flush()
    limits: list[int] = []
    read = log.store.events

    async def counted(*args: Any, **kwargs: Any) -> list[JobEventRecord]:
        limits.append(kwargs.get("limit", 0))
        return await read(*args, **kwargs)

    log.store.events = counted  # type: ignore[method-assign]
    seqs: list[int] = []
    reads_before_first = 0
    async with asyncio.timeout(20):
        async for record in log.watch(job):
            seqs.append(record.seq)
            if len(seqs) == 1:
                reads_before_first = len(limits)
                _points(log, job, 40)  # live while the replay has barely begun: stored and queued both
            elif len(seqs) % 700 == 0 and len(seqs) < 4000:
                _points(log, job, 25)  # more live events, some read by later pages, some not yet committed
                await asyncio.sleep(0.06)  # the writer commits some of them before the next page is read
            elif len(seqs) == job.last_event_seq and not job.state.terminal:
                _points(log, job, 10)  # after the replay: live only
                job.state = JobState.SUCCEEDED
                log.job_changed(job, "done")
    assert seqs == list(range(1, job.last_event_seq + 1)), "a gap or a repeat between the replay and live events"
    assert limits and all(limit == PAGE for limit in limits), f"the history was not read in pages: {limits}"
    assert len(limits) >= 5 and reads_before_first == 1, (len(limits), reads_before_first)


async def test_a_watch_from_a_seq_and_one_that_leaves_mid_replay(log: EventLog) -> None:
    job = _job()
    job.state = JobState.SUCCEEDED
    log.store.save_job(job)
    _points(log, job, 2 * PAGE)
    watch = log.watch(job, after_seq=PAGE - 7)  # resumes mid-page
    assert [r.seq async for r in watch] == list(range(PAGE - 6, 2 * PAGE + 1))
    leaving = log.watch(job)
    assert (await anext(leaving)).seq == 1
    await leaving.aclose()
    assert not log._subscribers.get("j1")


@pytest.mark.slow
def test_watch_job_of_a_running_job_replays_more_than_a_page_then_follows_it(
    cluster: tuple[ControllerProcess, list[AgentProcess]],
) -> None:
    """Through the real controller: a job past REPLAY_PAGE points when the watch starts, still emitting."""
    controller, _ = cluster
    points, rate = 12000, 3000.0
    with Client(controller.address) as client:
        job = client.submit({"algorithm": "emit", "hyperparameters": {"points": points, "rate": rate}})
        deadline = time.monotonic() + 30
        while (stored := len(client.metrics(job["id"]))) < events_module.REPLAY_PAGE + 500:  # more than a page
            assert time.monotonic() < deadline, "the job did not emit"
            time.sleep(0.1)
        start = time.time()
        assert client.job(job["id"])["state"] == "RUNNING", "the job ended before the watch: nothing live"
        messages = list(client.watch(job["id"]))
    seqs = [seq for message in messages for seq in record_seqs(message)]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in the stream"
    # every point stored before the watch came back (no gap from 1), so the replay read past its first page; which
    # message a record rode in says nothing about when it was stored, so no wall-clock split of the stream here
    assert len(seqs) >= stored > events_module.REPLAY_PAGE, (len(seqs), stored)
    assert [m for m in messages if m["time"] > start], "nothing live after the watch began"
    assert sum(len(m["points"]) for m in messages if m["kind"] == "metrics") == points
    assert messages[-1]["kind"] == "job_state" and messages[-1]["state"] == "SUCCEEDED"
