"""The controller core in process: a Controller over FakeAgents, a FakeClock and a store on a temp dir."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobState
from tensorfleet_desktop.controller.store.blobs import BlobStore
from tensorfleet_desktop.controller.store.sqlite import SqliteJobStore


@contextlib.asynccontextmanager
async def core(
    data_dir: Path, agents: FakeAgents, clock: FakeClock, max_replacements: int = 5, *, fair_share: bool = True
) -> AsyncIterator[Controller]:
    """A started Controller; stopped (its state saved) and its store closed on the way out."""
    store = SqliteJobStore(data_dir / "tensorfleet.db")
    await store.open()
    blobs = BlobStore(data_dir / "blobs")
    await blobs.open()
    controller = Controller(
        store,
        blobs,
        ControllerMetrics(),
        max_replacements=max_replacements,
        agents=agents,
        clock=clock,
        fair_share=fair_share,
    )
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()
        await store.close()


async def until(controller: Controller, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Until `predicate()` holds, checked after every job change the controller announces."""
    changed = asyncio.Event()
    unsubscribe = controller.add_job_listener(lambda job: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()


async def ended(controller: Controller, job: Job, timeout: float = 2.0) -> JobState:
    await until(controller, lambda: job.state.terminal, timeout)
    return job.state
