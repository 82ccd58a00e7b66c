"""The controller core in process packing jobs that share a GPU by memory onto fake agents' GPUs: what it
dispatched counts until the agent's telemetry says so (never promised twice between samples), fractions become
bytes of the chosen GPU, other programs' memory is left alone, and whole-GPU jobs wait for an empty GPU."""

from __future__ import annotations

from pathlib import Path

from helpers.core_harness import core
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_desktop.controller.model import JobState
from tensorfleet_desktop.controller.ports import GpuView

GIB = 1 << 30


def _gpus(*used_gib: int) -> tuple[GpuView, ...]:
    return tuple(GpuView(i, 16 * GIB, used * GIB) for i, used in enumerate(used_gib))


async def test_dispatched_shares_count_until_telemetry_and_whole_jobs_wait(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=2)
    agents.gpu_telemetry("g", *_gpus(0, 0))
    async with core(tmp_path, agents, clock) as controller:
        shared = [await controller.submit({"algorithm": "noop", "gpu_memory": "6GiB"}, "me") for _ in range(5)]
        whole = await controller.submit({"algorithm": "noop", "gpus": 1}, "me")
        await agents.wait(lambda: len(agents.running()) == 4)
        controller.placement.schedule()  # no telemetry since: the 4 sent count, a fifth 6 GiB would over-promise
        running = agents.running()
        assert len(running) == 4 and shared[4].state is JobState.QUEUED and whole.state is JobState.QUEUED
        specs = [agents.task(a).spec for a in running]
        assert all(s.gpus == 1 and s.gpu_memory_bytes == 6 * GIB for s in specs)
        planned = sorted(controller.placement.attempts.gpu_shares[a][1] for a in running)
        assert planned == [0, 0, 1, 1]  # best fit: two on each 16 GiB GPU
        clock.advance(2.0)  # long enough queued to be told why it waits
        controller.placement.pass_once()
        assert shared[4].waiting == "waiting for a GPU with 6GiB free to share"
        agents.finish(running[0])
        await agents.wait(lambda: len(agents.running()) == 4 and shared[4].state is not JobState.QUEUED)
        assert whole.state is JobState.QUEUED  # both GPUs still shared
        for attempt in agents.running():
            agents.finish(attempt)
        await agents.wait(lambda: len(agents.running()) == 1)
        assert whole.state is JobState.RUNNING
        assert agents.task(agents.running()[0]).spec.gpu_memory_bytes == 0  # a whole GPU


async def test_fractions_become_bytes_and_other_programs_memory_is_left_alone(tmp_path: Path) -> None:
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=2)
    agents.gpu_telemetry("g", *_gpus(12, 0))  # another program holds 12 GiB of GPU 0
    async with core(tmp_path, agents, clock) as controller:
        job = await controller.submit({"algorithm": "noop", "gpus": 0.25}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        assert agents.task(attempt).spec.gpu_memory_bytes == 4 * GIB  # a quarter of 16 GiB
        assert controller.placement.attempts.gpu_shares[attempt][1:] == (0, 4 * GIB)  # fits exactly beside it
        big = await controller.submit({"algorithm": "noop", "gpu_memory": "5GiB"}, "me")
        await agents.wait(lambda: len(agents.running()) == 2)
        second = agents.running()[1]
        assert controller.placement.attempts.gpu_shares[second][1] == 1 and job.state is JobState.RUNNING
        assert big.state is JobState.RUNNING
