"""A progress record held back (EventLog.progress) is recorded when the controller stops: its timer would fire
after the store closed, and a restarted controller's replay of the job would lack the summary after its last trials."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tensorfleet_desktop.controller.agent_link import FleetAgents
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.fleet import Fleet
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobState, JobTask
from tensorfleet_desktop.controller.store.blobs import BlobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore


def test_a_held_progress_record_is_recorded_when_the_controller_stops(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        store = SqliteJobStore(tmp_path / "tensorfleet.db")
        await store.open()
        blobs = BlobStore(tmp_path / "blobs")
        await blobs.open()
        controller = Controller(store, blobs, ControllerMetrics(), agents=FleetAgents(Fleet()))
        await controller.start()
        job = Job("j1", {}, "me", 1, state=JobState.RUNNING, tasks=[JobTask(index=0), JobTask(index=1)])
        await store.insert_job(job)
        controller.events.progress(job, (job.tasks[0],))  # a trial ends: recorded at once
        controller.events.progress(job, (job.tasks[1],))  # the next, 0 ms later: held for PROGRESS_EVERY
        await controller.stop()  # within that time
        await store.close()
        await asyncio.sleep(0.4)  # the held timer fires now, after the store's close
        reopened = SqliteJobStore(tmp_path / "tensorfleet.db")
        await reopened.open()
        try:
            records = await reopened.events("j1", 0)
        finally:
            await reopened.close()
        return [r.message for r in records if r.kind == "job_state"]

    assert asyncio.run(scenario()) == ["progress", "progress"]
