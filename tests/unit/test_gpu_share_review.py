"""Review of issue 24, GPU sharing (findings 4, 5, 6, 10): a share counts in a pass's quota gate what it counts once
placed, a gang's sharing ranks get distinct GPUs, the agent counts what its sharing tasks use and says which GPU it
chose, and gpu_memory is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.core_harness import core
from helpers.fake_agents import FakeAgent, FakeAgents, FakeClock
from tensorfleet_desktop.controller.fair_share import Holding, Holdings
from tensorfleet_desktop.controller.gpu_share import gpu_amount
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec
from tensorfleet_desktop.controller.ports import GpuView
from tensorfleet_desktop.controller.quotas import Gate, Quota
from tensorfleet_desktop.controller.scheduler import Capacity, GpuRoom, Request, plan

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


async def test_a_share_the_agent_put_on_a_bigger_gpu_counts_its_share_of_that_one(tmp_path: Path) -> None:
    """Planned on the 16 GiB GPU (best fit), put by the agent on the 80 GiB one: 6/80 of a GPU, not 6/16."""
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=2).shares_on = 1
    agents.gpu_telemetry("g", GpuView(0, 16 * GIB, 0), GpuView(1, 80 * GIB, 0))
    async with core(tmp_path, agents, clock) as controller:
        await controller.submit({"algorithm": "noop", "gpu_memory": "6GiB"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        attempt = agents.running()[0]
        await agents.wait(lambda: controller.placement.attempts.gpu_shares[attempt][1] == 1)
        clock.advance(1.0)
        controller.placement.pass_once()
        assert controller.placement.usage.holdings.running_gpus("me") == pytest.approx(6 / 80)


def _two_gpus(node: str = "a", free_slots: int = 2) -> Capacity:
    rooms = (GpuRoom(0, 16 * GIB, 16 * GIB, whole=True), GpuRoom(1, 16 * GIB, 16 * GIB, whole=True))
    return Capacity(node, node, free_slots, free_slots, workloads=frozenset({"noop"}), gpus=rooms)


def test_a_pass_counts_a_share_by_memory_on_its_gpu_against_the_gpus_quota() -> None:
    """Review #4 (the reviewer's gate_share): quota gpus=1, two 16 GiB GPUs, three 12 GiB shares. Each counts 0.75 of
    a GPU once placed, so one pass places one (it placed two: 1.5 GPUs held); a small share on a big GPU is not
    charged half a GPU either."""
    gate = Gate({"me": Quota("me", gpus=1)}, Holdings(), lambda user: 0.0, 3600.0)
    requests = [Request(f"j{i}", 0, i, (0,), "noop", gpus=1, user="me", gpu_memory=12 * GIB) for i in range(3)]
    held: dict[str, str] = {}
    out = plan(requests, [_two_gpus()], 0.0, 60.0, ordered=True, gate=gate, held=held)
    assert [(p.job_id, p.gpu) for p in out] == [("j0", 0)]
    assert sum(gpu_amount({"gpu_memory": p.gpu_memory}, 16 * GIB) for p in out) <= 1.0
    assert gate.gpus["me"] == pytest.approx(0.75)
    assert held["j1"] == "over quota: me holds 0.75 of 1 GPUs and this job needs 0.75 more (quota gpus=1)"
    small = [Request(f"s{i}", 0, i, (0,), "noop", gpus=1, user="me", gpu_memory=2 * GIB) for i in range(8)]
    gate = Gate({"me": Quota("me", gpus=1)}, Holdings(), lambda user: 0.0, 3600.0)
    big = Capacity("b", "b", 1, 1, workloads=frozenset({"noop"}), gpus=(GpuRoom(0, 80 * GIB, 80 * GIB, True),))
    assert len(plan(small, [big], 0.0, 60.0, ordered=True, gate=gate, held={})) == 8  # 8 x 2/80: 0.2 of a GPU


def test_a_gangs_sharing_ranks_get_distinct_gpus() -> None:
    """Review #5: the two ranks of a gang sharing GPUs go to two GPUs (they were both put on GPU 0); with one GPU
    free the gang waits rather than share it between its ranks."""
    gang = Request("g", 0, 1, (0, 1), "noop", gpus=1, gang=True, gpu_fraction=0.5)
    out = plan([gang], [_two_gpus()], 0.0, 60.0)
    assert sorted((p.rank, p.node_id, p.gpu) for p in out) == [(0, "a", 0), (1, "a", 1)]
    alone = Request("s", 0, 1, (0, 1), "noop", gpus=1, gpu_fraction=0.5)  # not a gang: both on one GPU (packed)
    assert {p.gpu for p in plan([alone], [_two_gpus()], 0.0, 60.0)} == {0}
    one = Capacity("a", "a", 1, 1, workloads=frozenset({"noop"}), gpus=(GpuRoom(0, 16 * GIB, 16 * GIB, True),))
    assert plan([gang], [one], 0.0, 60.0) == []


async def test_two_big_shares_in_one_pass_stay_within_the_gpus_quota(tmp_path: Path) -> None:
    """Review #4 in the core (the reviewer's repro): quota gpus=1 and two 12 GiB shares of 16 GiB GPUs waiting
    when the agent comes: its first pass runs one (0.75 of a GPU), the other waits over quota."""
    agents, clock = FakeAgents(), FakeClock()
    async with core(tmp_path, agents, clock) as controller:
        controller.quotas.set("me", gpus=1)
        jobs = [await controller.submit({"algorithm": "noop", "gpu_memory": "12GiB"}, "me") for _ in range(2)]
        agents.fleet["g"] = FakeAgent("g", 2, gpus=(GpuView(0, 16 * GIB, 0), GpuView(1, 16 * GIB, 0)))
        controller.placement.schedule()  # one pass sees both
        await agents.wait(lambda: len(agents.running()) >= 1)
        controller.placement.schedule()
        assert len(agents.running()) == 1
        assert controller.placement.usage.holdings.running_gpus("me") == pytest.approx(0.75)
        assert "over quota: me holds 0.75 of 1 GPUs" in controller.placement.held[jobs[1].id]


async def test_after_a_restart_a_running_share_counts_on_its_agents_gpu(tmp_path: Path) -> None:
    """Review #4: a controller restarted while a 6 GiB share runs on an 80 GiB GPU counts it 6/80 of a GPU once its
    agent's GPUs are known (it counted half a GPU until it ended)."""
    agents, clock = FakeAgents(), FakeClock()
    agents.add("g", slots=1)
    agents.gpu_telemetry("g", GpuView(0, 80 * GIB, 0))
    async with core(tmp_path, agents, clock) as controller:
        await controller.submit({"algorithm": "noop", "gpu_memory": "6GiB"}, "me")
        await agents.wait(lambda: len(agents.running()) == 1)
        assert controller.placement.usage.holdings.running_gpus("me") == pytest.approx(6 / 80)
    gpus = agents.fleet["g"].gpus
    agents.gpu_telemetry("g")  # the agent says nothing of its GPUs yet as the controller starts again
    async with core(tmp_path, agents, clock) as controller:
        usage = controller.placement.usage
        assert usage.holdings.running_gpus("me") == pytest.approx(0.5)  # its GPU unknown: half a GPU, for now
        agents.gpu_telemetry("g", GpuView(0, 80 * GIB, 0, 6 * GIB, 1, False))
        assert gpus[0].total_memory == 80 * GIB
        clock.advance(1.0)
        controller.placement.pass_once()
        assert usage.holdings.running_gpus("me") == pytest.approx(6 / 80)


async def test_the_agent_knows_a_gangs_shared_gpus_and_answers_the_one_it_chose(tmp_path: Path) -> None:
    """Review #5/#6 on the agent: a gang rank sharing a GPU avoids the GPUs its job's other ranks share here (another
    job's, or a non-gang's, it may join); RunTask's answer names the GPU of the slot the share took."""
    from tensorfleet_agent.core.types import TaskSpec
    from tensorfleet_agent.metrics import AgentMetrics
    from tensorfleet_agent.runtime.blobs import BlobStore
    from tensorfleet_agent.runtime.executor import Executor, ExecutorConfig
    from tensorfleet_agent.runtime.slots import SlotPool

    pool = SlotPool(8, [0, 1], gpu_memory={0: 16 * GIB, 1: 16 * GIB})
    blobs = BlobStore(tmp_path / "data" / "blobs", 1 << 30)
    ex = Executor(ExecutorConfig(tmp_path / "data", spare_workers=0), pool, blobs, AgentMetrics())

    def rank(task_id: str, job: str, index: int, partition: str = "gang") -> TaskSpec:
        return TaskSpec(task_id, job, "noop", rank=index, world_size=2, partition=partition, gpu_memory_bytes=GIB)

    slot = pool.acquire_share(GIB, {})
    first = rank("g-r0", "g", 0)
    ex._share_gpus["g-r0"] = ("g", 0)  # taken, not yet journaled nor in _running: its sibling arrives meanwhile
    assert ex._gang_gpus(rank("g-r1", "g", 1)) == {0}
    assert ex._gang_gpus(rank("h-r1", "h", 1)) == frozenset()  # another job's rank may join it
    assert ex._gang_gpus(rank("s-r1", "g", 1, partition="shard")) == frozenset()  # independent ranks pack
    assert ex.shared_gpu(first, (slot.id,)) == (0, GIB)
    assert ex.shared_gpu(TaskSpec("w", "w", "noop", gpus=1), (1,)) is None
    ex._release((slot,), GIB, "g-r0")
    assert ex._gang_gpus(rank("g-r1", "g", 1)) == frozenset()


def test_a_user_over_the_gpus_quota_is_told_what_a_share_needs_on_its_gpu() -> None:
    """A share by memory of a user over their GPU quota is held with what it needs on the GPU it would take."""
    holdings = Holdings()
    holdings.add("t", Holding("old", 0, "me", 1.5))  # over: its quota was lowered
    gate = Gate({"me": Quota("me", gpus=1)}, holdings, lambda user: 0.0, 3600.0)
    held: dict[str, str] = {}
    request = Request("j", 0, 1, (0,), "noop", gpus=1, user="me", gpu_memory=4 * GIB)
    assert plan([request], [_two_gpus()], 0.0, 60.0, ordered=True, gate=gate, held=held) == []
    assert held == {"j": "over quota: me holds 1.5 of 1 GPUs and this job needs 0.25 more (quota gpus=1)"}
