"""No fixed wait on the path submit -> place -> run -> event -> the waiter hears the end (issue 21).

Proved without timing the machine: every interval on the way (the scheduler's tick, the store writer's batch
window, WatchJobs' coalescing window) is set to an hour, and the job's end still reaches a WatchJobs waiter (what
`Client.wait` follows) within the test's few seconds: nothing on the path waits one of them out. A pass of the
scheduler builds requests for what it can place, not for the whole queue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers.core_harness import core, until
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.core.types import Progress, TaskState
from tensorfleet_desktop.controller import placement, service
from tensorfleet_desktop.controller.model import JobState
from tensorfleet_desktop.controller.placement import Placement
from tensorfleet_desktop.controller.store import engine

HOUR = 3600.0


class _Context:
    async def abort(self, code: Any, message: str) -> None:
        raise AssertionError(f"the stream failed: {code} {message}")


async def test_a_jobs_end_reaches_its_waiter_without_any_window_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "COALESCE_SECONDS", HOUR)
    monkeypatch.setattr(placement, "TICK", HOUR)
    monkeypatch.setattr(engine, "BATCH_WINDOW", HOUR)
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        servicer = service.ControllerServicer(
            controller, SimpleNamespace(agents={}), info=lambda: cpb.ControllerInfo(), shutdown=lambda: None
        )
        async with asyncio.timeout(10):  # an hour's window waited out anywhere fails here
            job = await controller.submit({"algorithm": "noop"}, "me")  # awaits its commit
            changes = servicer.WatchJobs(cpb.WatchJobsRequest(job_ids=[job.id]), _Context())
            assert (await anext(changes)).snapshot
            await agents.wait(lambda: len(agents.running()) == 1)  # placed on the submit, not on a tick
            attempt = agents.running()[0]
            agents.send(attempt, Progress(0.5))  # a change that is not urgent: it opens the hour's window
            agents.finish(attempt, cause="completed")
            states = []
            while not states or states[-1] not in ("SUCCEEDED", "FAILED"):
                change = await anext(changes)
                states += [cpb.JobState.Name(j.state).removeprefix("JOB_STATE_") for j in change.jobs]
            assert states[-1] == "SUCCEEDED" and job.state is JobState.SUCCEEDED
            await changes.aclose()
            history = [r async for r in controller.watch(job.id)]  # the replay flushes: no window either
            assert history[-1].kind == "job_state" and history[-1].state == "SUCCEEDED"


async def test_a_state_change_is_sent_at_once_behind_a_burst_and_a_burst_is_still_grouped() -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def feed() -> Any:
        while (item := await queue.get()) is not None:
            yield item

    groups = service._batches(feed(), 100, HOUR, lambda item: item.startswith("state"))
    async with asyncio.timeout(10):
        await queue.put("point 1")
        assert await anext(groups) == ["point 1"]  # after a quiet spell: at once
        second = asyncio.ensure_future(anext(groups))
        for n in (2, 3):  # right behind it: held for the window...
            await queue.put(f"point {n}")
            for _ in range(5):
                await asyncio.sleep(0)
            assert not second.done()
        await queue.put("state SUCCEEDED")  # ...until a state change comes: out at once, with them
        assert await second == ["point 2", "point 3", "state SUCCEEDED"]
        await queue.put(None)
        assert [g async for g in groups] == []


async def test_a_pass_builds_requests_for_what_it_places_not_for_the_whole_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    original = Placement._request

    def counting(self: Placement, job: Any, now: float) -> Any:
        built.append(job.id)
        return original(self, job, now)

    monkeypatch.setattr(Placement, "_request", counting)
    agents, clock = FakeAgents(), FakeClock()
    async with core(tmp_path, agents, clock) as controller:
        jobs = [await controller.submit({"algorithm": "noop"}, "me") for _ in range(200)]
        urgent = await controller.submit({"algorithm": "noop", "priority": 5}, "me")
        agents.add("a1", slots=2)
        await agents.wait(lambda: len(agents.running()) == 2)
        built.clear()
        agents.finish(agents.running()[0])
        await agents.wait(lambda: len(agents.running()) == 2 and jobs[1].tasks[0].node_id == "a1")
        assert urgent.tasks[0].node_id == "a1" and jobs[0].tasks[0].node_id == "a1"  # priority, then FIFO
        assert len(built) < 20, f"a pass for one free slot built {len(built)} requests"


async def test_a_job_opened_again_after_the_order_dropped_it_is_placed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placement, "_COMPACT", 0)  # every ended job is dropped from the kept order at once
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1")
    async with core(tmp_path, agents, clock) as controller:
        failing = await controller.submit({"algorithm": "noop", "max_retries": 0}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        agents.finish(agents.running()[0], TaskState.FAILED, "exception", "boom")
        others = [await controller.submit({"algorithm": "noop"}, "me") for _ in range(3)]
        for _ in others:
            await agents.wait(lambda: len(agents.running()) == 1)
            agents.finish(agents.running()[0], cause="completed")
        await until(controller, lambda: all(j.state is JobState.SUCCEEDED for j in others))
        assert failing.state is JobState.FAILED
        controller.retry(failing.id)
        await agents.wait(lambda: agents.running() == [f"{failing.id}-r0-a2"])
        agents.finish(agents.running()[0], cause="completed")
        await until(controller, lambda: failing.state is JobState.SUCCEEDED)
