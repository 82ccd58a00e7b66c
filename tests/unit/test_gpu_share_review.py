"""Review of issue 24, GPU sharing (findings 4, 5, 6, 10): a share counts in a pass's quota gate what it counts once
placed, a gang's sharing ranks get distinct GPUs, the agent counts what its sharing tasks use and says which GPU it
chose, and gpu_memory is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.core_harness import core
from helpers.fake_agents import FakeAgents, FakeClock
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec
from tensorfleet_desktop.controller.ports import GpuView

GIB = 1 << 30


def test_gpu_memory_is_bounded_by_one_pib() -> None:
    for value in (10**30, "2000TiB", 2**63, (1 << 50) + 1):
        with pytest.raises(JobSpecError, match="at most 1PiB"):
            parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": value})
    assert parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": "80GiB"}).gpu_memory == 80 * GIB
    assert parse_job_spec({"algorithm": "mlp", "dataset": "iris", "gpu_memory": 1 << 50}).gpu_memory == 1 << 50


def test_agent_counts_what_its_sharing_tasks_use_beyond_their_promise() -> None:
    """Review #6: GPU 0 holds a 6 GiB share whose task uses 10 GiB, GPU 1 is empty: an 8 GiB share goes to GPU 1
    (it counted 6 GiB promised and put it on GPU 0: 18 GiB of 16 in demand)."""
    from tensorfleet_agent.runtime.slots import SlotPool

    pool = SlotPool(8, [0, 1], gpu_memory={0: 16 * GIB, 1: 16 * GIB})
    assert pool.acquire_share(6 * GIB, {}).gpu_index == 0
    assert pool.acquire_share(8 * GIB, {}, {0: 10 * GIB}).gpu_index == 1
    assert pool.acquire_share(7 * GIB, {}, {0: 10 * GIB}).gpu_index == 1  # 6 GiB left on GPU 0, 8 on GPU 1
    assert pool.acquire_share(6 * GIB, {}, {0: 10 * GIB}).gpu_index == 0  # exactly what GPU 0 has left


def test_own_processes_gpu_use() -> None:
    import os

    from tensorfleet_agent.runtime.gpu_shares import ours_by_gpu

    procs = [(0, os.getpid(), GIB), (0, 999_999_999, 7 * GIB), (1, os.getpid(), 2 * GIB)]
    assert ours_by_gpu(procs) == {0: GIB, 1: 2 * GIB}


def test_agent_keeps_a_gangs_sharing_ranks_on_distinct_gpus() -> None:
    """Review #5: the ranks of one gang share no GPU (NCCL refuses two ranks on one device); no other GPU: refused."""
    from tensorfleet_agent.core.errors import ResourcesExhausted
    from tensorfleet_agent.runtime.slots import SlotPool

    pool = SlotPool(8, [0, 1], gpu_memory={0: 16 * GIB, 1: 16 * GIB})
    first = pool.acquire_share(4 * GIB, {})
    assert pool.acquire_share(4 * GIB, {}, avoid=frozenset({first.gpu_index or 0})).gpu_index == 1
    with pytest.raises(ResourcesExhausted, match="another rank of this gang shares it"):
        pool.acquire_share(4 * GIB, {}, avoid=frozenset({0, 1}))


def test_run_task_answers_the_gpu_the_share_went_to() -> None:
    from tensorfleet_agent._generated import agent_pb2 as pb
    from tensorfleet_agent.rpc.convert import TaskAccepted, accepted_from_pb

    reply = pb.RunTaskResponse(task_id="t", slot_ids=[1], shared_gpu_index=1, shared_gpu_bytes=6 * GIB)
    assert accepted_from_pb(reply) == TaskAccepted((1,), (1, 6 * GIB))
    assert accepted_from_pb(pb.RunTaskResponse(task_id="t", slot_ids=[0])) == TaskAccepted((0,), None)


async def test_the_controller_counts_a_share_on_the_gpu_its_agent_chose(tmp_path: Path) -> None:
    """Review #6: the controller planned GPU 0, the agent's best fit put the share on GPU 1 and said so in RunTask's
    answer: GPU 1 counts as shared and GPU 0 is whole again (it was kept from whole-GPU work while the share ran)."""
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=2).shares_on = 1
    agents.gpu_telemetry("g", GpuView(0, 16 * GIB, 0), GpuView(1, 16 * GIB, 0))
    async with core(tmp_path, agents, clock) as controller:
        await controller.submit({"algorithm": "noop", "gpu_memory": "6GiB"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        shares = controller.placement.attempts.gpu_shares
        await agents.wait(lambda: shares[attempt][1] == 1)
        assert shares[attempt] == ("g", 1, 6 * GIB)
        (cap,) = controller.placement._capacities_of(agents.agents())
        assert [(room.index, room.whole, room.free_memory) for room in cap.gpus] == [
            (0, True, 16 * GIB),
            (1, False, 10 * GIB),
        ]
