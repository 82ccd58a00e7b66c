"""The controller core in process (review of issue 24): a preemption round holds the room its victims free until its
job is placed, so a gang whose victims end one tick apart is placed once, with no second round, and a round whose job
cannot be placed is given up with its victims spared a while; a quota lifted on a full cluster is preempted for at
once (no stale verdict from the last placing pass); and a pass with no free slot but a shared GPU with memory left
builds the requests of the sharing jobs only, not of the whole queue."""

from __future__ import annotations

from pathlib import Path

from test_core_preempting import tick

from helpers.core_harness import core
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_agent.core.types import ExitCause, TaskState
from tensorfleet_desktop.controller.model import Job, JobState, TaskRunState
from tensorfleet_desktop.controller.ports import GpuView
from tensorfleet_desktop.controller.scheduler import Request

GIB = 1 << 30


async def test_a_gang_whose_victims_end_one_tick_apart_is_placed_after_one_round(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a")
    agents.add("b")
    async with core(tmp_path, agents, clock) as controller:
        lows = [
            await controller.submit({"algorithm": "noop", "priority": -1, "allow_restart": True}, user)
            for user in ("bob", "carol")
        ]
        await agents.wait(lambda: len(agents.running()) == 2)
        gang = await controller.submit({"algorithm": "noop", "num_workers": 2, "priority": 10}, "alice")
        await tick(controller, clock)
        await agents.wait(lambda: len(agents.preempted) == 2)
        first, second = sorted(agents.running())
        agents.finish(first, TaskState.CANCELLED, ExitCause.PREEMPTED, agents.preempted[first][0])
        for _ in range(4):  # the second victim still saves its checkpoint: its room is held, not taken back
            await tick(controller, clock)
        assert agents.running() == [second]
        assert [t.state for job in lows for t in job.tasks].count(TaskRunState.PENDING) == 1
        assert gang.state is JobState.QUEUED and gang.waiting.startswith("preempting 1 task(s) of job")
        agents.finish(second, TaskState.CANCELLED, ExitCause.PREEMPTED, agents.preempted[second][0])
        await agents.wait(lambda: len(agents.running()) == 2)
        for _ in range(4):
            await tick(controller, clock)
        assert gang.state is JobState.RUNNING and gang.waiting == ""
        assert {agents.task(a).spec.job_id for a in agents.running()} == {gang.id}
        assert len([c for c in agents.calls if c[0] == "preempt"]) == 2  # one round, never a second
        assert controller.placement.preempter.rounds == {}
        assert all(job.tasks[0].state is TaskRunState.PENDING and job.tasks[0].failures == 0 for job in lows)


async def test_a_quota_lifted_on_a_full_cluster_is_preempted_for(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a", slots=3)
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("alice", tasks=1)
        await controller.submit({"algorithm": "noop", "priority": 5}, "alice")
        await controller.submit({"algorithm": "noop", "priority": -1, "allow_restart": True}, "bob")
        await agents.wait(lambda: len(agents.running()) == 2)
        urgent = await controller.submit({"algorithm": "noop", "priority": 10}, "alice")  # held with a slot free
        await tick(controller, clock)
        assert urgent.id in controller.placement.held
        await controller.submit({"algorithm": "noop", "priority": -1, "allow_restart": True}, "bob")  # takes it
        await agents.wait(lambda: len(agents.running()) == 3)
        for _ in range(3):
            await tick(controller, clock)
        assert urgent.waiting.startswith("over quota: alice runs 1 of 1 tasks")
        controller.set_quota("alice", {"tasks": -1})  # lifted, through the core as SetQuota does
        for _ in range(2):
            await tick(controller, clock)
        assert controller.placement.held == {}
        assert len(agents.preempted) == 1 and urgent.waiting.startswith("preempting 1 task(s) of job")


async def test_a_full_agent_with_a_shared_gpu_builds_only_the_sharing_jobs_requests(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=1)
    agents.gpu_telemetry("g", GpuView(0, 16 * GIB, 0))
    async with core(tmp_path, agents, clock) as controller:
        await controller.submit({"algorithm": "noop", "gpu_memory": "4GiB"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        for _ in range(200):  # no slot is free for these: a pass must not build their requests
            await controller.submit({"algorithm": "noop", "gpus": 1}, "me")
        placement = controller.placement
        built: list[str] = []
        request = placement._request

        def counting(job: Job, now: float) -> Request | None:
            built.append(job.id)
            return request(job, now)

        placement._request = counting  # type: ignore[method-assign]
        placement.schedule()
        assert len(built) <= 1  # at most the head of the queue, before plan() turns to the sharing jobs
        late = await controller.submit({"algorithm": "noop", "gpu_memory": "4GiB"}, "me")
        await agents.wait(lambda: len(agents.running()) == 2)
        assert late.state is JobState.RUNNING and late.id in built and len(built) <= 4


async def test_a_round_whose_job_cannot_be_placed_is_given_up_and_its_victims_spared(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("a")
    agents.add("b")
    async with core(tmp_path, agents, clock) as controller:
        for user in ("bob", "carol"):
            await controller.submit({"algorithm": "noop", "priority": -1, "allow_restart": True}, user)
        await agents.wait(lambda: len(agents.running()) == 2)
        gang = await controller.submit({"algorithm": "noop", "num_workers": 2, "priority": 10}, "alice")
        await tick(controller, clock)
        await agents.wait(lambda: len(agents.preempted) == 2)
        controller.set_quota("alice", {"tasks": 1})  # the gang may no longer run: the room made for it is lost
        for attempt in sorted(agents.running()):
            agents.finish(attempt, TaskState.CANCELLED, ExitCause.PREEMPTED, agents.preempted[attempt][0])
        await agents.wait(lambda: len(agents.running()) == 2)  # the victims run again (attempt 2)
        await tick(controller, clock)
        assert gang.id in controller.placement.preempter.rounds  # open a while for its job to be placed
        await tick(controller, clock, 6.0)
        assert controller.placement.preempter.rounds == {} and gang.state is JobState.QUEUED
        controller.set_quota("alice", {"tasks": -1})
        for _ in range(4):  # its victims are spared: no new round against them straight away
            await tick(controller, clock)
        assert len([c for c in agents.calls if c[0] == "preempt"]) == 2
        await tick(controller, clock, 60.0)
        await tick(controller, clock)
        assert len([c for c in agents.calls if c[0] == "preempt"]) == 4  # then it may try again
