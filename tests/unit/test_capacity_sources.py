"""What queued work waits for: every job no online agent took gets a reason, and the capacity sources (Wake-on-LAN,
Slurm pools) are offered that work once a tick and may speak for it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from helpers.core_harness import core, ended
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_desktop.controller.capacity import DEMAND_AFTER, Waiting
from tensorfleet_desktop.controller.model import JobState
from tensorfleet_desktop.controller.placement import TICK
from tensorfleet_desktop.controller.scheduler import Capacity


class Recorder:
    name = "recorder"

    def __init__(self, speak_for: str = "") -> None:
        self.offers: list[list[str]] = []
        self.speak_for = speak_for

    def offer(self, waiting: Sequence[Waiting], online: Sequence[Capacity], now: float) -> dict[str, str]:
        self.offers.append([w.request.job_id for w in waiting])
        return {w.request.job_id: "waking agent desk-7" for w in waiting if w.name == self.speak_for}


class Broken:
    name = "broken"

    def offer(self, waiting: Sequence[Waiting], online: Sequence[Capacity], now: float) -> dict[str, str]:
        raise RuntimeError("a bug in a source")


def tick(controller: object, clock: FakeClock) -> None:
    clock.advance(max(TICK, DEMAND_AFTER))
    controller.placement.pass_once()  # type: ignore[attr-defined]


async def test_queued_jobs_say_why_they_wait_and_sources_are_offered_them(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=1)
    async with core(tmp_path, agents, clock) as controller:
        recorder = Recorder(speak_for="big")
        controller.add_capacity_source(Broken())  # its failure is logged, never stops scheduling
        controller.add_capacity_source(recorder)
        first = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        second = await controller.submit({"algorithm": "noop"}, "me")
        big = await controller.submit({"algorithm": "noop", "name": "big", "num_workers": 3}, "me")
        odd = await controller.submit({"algorithm": "noop", "constraints": {"labels": {"gpu": "a100"}}}, "me")
        tick(controller, clock)
        assert recorder.offers[-1] == [second.id, big.id, odd.id]  # scheduling order; the running job is not offered
        assert first.waiting == ""
        assert second.waiting == "waiting for a free slot"
        assert big.waiting == "waking agent desk-7"  # the source spoke for it
        assert odd.waiting == "no online agent can run workload noop (labels gpu=a100)"
        agents.finish(agents.running()[0])
        await agents.wait(lambda: agents.running() == [f"{second.id}-r0-a1"])
        tick(controller, clock)
        assert second.waiting == "" and second.id not in recorder.offers[-1]
        agents.finish(agents.running()[0])
        assert await ended(controller, second) is JobState.SUCCEEDED
        controller.cancel(odd.id)
        tick(controller, clock)
        assert odd.waiting == ""


async def test_a_job_placed_at_once_is_never_offered(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a1", slots=2)
    async with core(tmp_path, agents, clock) as controller:
        recorder = Recorder()
        controller.add_capacity_source(recorder)
        job = await controller.submit({"algorithm": "noop"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        tick(controller, clock)
        assert recorder.offers and not any(recorder.offers) and job.waiting == ""
