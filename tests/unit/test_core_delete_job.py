"""Deleting a job in the core: only an ended one, its record and history gone from the store and from memory,
its files left for gc, its models kept, watchers and job lists told."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helpers.core_harness import core, ended, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import ArtifactReady, MetricPoint, TaskState
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.errors import JobError, NotFoundError
from tensorfleet_desktop.controller.job_feed import JobFeed
from tensorfleet_desktop.controller.model import JobState
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore


def _store(controller: Controller, data: bytes) -> str:
    """Bytes in the controller's blob store, as a copy from an agent leaves them; their sha256."""
    sha = hashlib.sha256(data).hexdigest()
    path = controller.blobs.path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha


async def test_an_ended_job_is_deleted_with_its_history_and_its_files_become_garbage(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    a1 = agents.add("a1", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        feed = JobFeed(controller.add_job_listener)
        kept = await controller.submit({"algorithm": "noop"}, "me")
        job = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        await agents.wait(lambda: len(agents.running()) == 2)
        with pytest.raises(JobError, match="cancel it first"):
            await controller.delete_job(job.id)
        with pytest.raises(NotFoundError, match="no job 'jnope'"):
            await controller.delete_job("jnope")
        blob = _store(controller, b"a file the failed job saved")
        a1.blobs.add(blob)
        attempt = job.tasks[0].agent_task_id
        agents.send(attempt, MetricPoint(1, "loss", 0.5, 0.0), ArtifactReady(blob, 27, "file", "out.txt"))
        await until(controller, lambda: bool(job.artifacts))
        agents.finish(attempt, TaskState.FAILED, "exit_code", "boom")
        agents.finish(kept.tasks[0].agent_task_id)
        assert await ended(controller, job) is JobState.FAILED
        assert await ended(controller, kept) is JobState.SUCCEEDED

        assert (await controller.collect_garbage(grace=0))["deleted"] == 0  # a failed job's files are kept
        with feed.watcher() as watcher:
            watcher.take()
            deleted = await controller.delete_job(job.id[:8])  # a unique prefix, as every job command takes
            assert deleted is job and watcher.take() == {job.id}  # job lists hear of it (and find it gone)
        with pytest.raises(NotFoundError):
            controller.get(job.id)
        assert [j.id for j in controller.list_jobs()] == [kept.id]
        assert [j.id for j in await controller.store.load_jobs()] == [kept.id]
        assert await controller.store.events(job.id) == []
        assert await controller.store.events(kept.id) != []
        assert controller.events._subscribers == {}  # nothing of the job is held here
        assert (await controller.collect_garbage(grace=0))["deleted"] == 1
        assert not controller.blobs.path(blob).exists()
        with pytest.raises(NotFoundError):
            await controller.delete_job(job.id)

    store = SqliteJobStore(tmp_path / "tensorfleet.db")  # a restart does not bring it back
    await store.open()
    try:
        assert [j.id for j in await store.load_jobs()] == [kept.id]
    finally:
        await store.close()


async def test_a_watcher_of_a_deleted_job_ends(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        watch = controller.watch(job.id)
        first = await anext(watch)  # subscribed, replaying
        assert first.kind == "job_state"
        controller.cancel(job.id)
        controller.machine.registering.add(job.id)  # cancelled while its model was being saved
        with pytest.raises(JobError, match="still saving its model"):
            await controller.delete_job(job.id)
        controller.machine.registering.discard(job.id)
        await controller.delete_job(job.id)
        rest = [e.kind async for e in watch]  # what was recorded before the deletion, then the end
        assert rest and rest[-1] == "job_state"
        with pytest.raises(NotFoundError):
            [e async for e in controller.watch(job.id)]
