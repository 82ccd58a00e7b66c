from __future__ import annotations

import pytest

from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.runtime.slots import GangSlots, SlotPool, default_cpu_slots


def test_default_cpu_slots() -> None:
    assert default_cpu_slots(2) == 1
    assert default_cpu_slots(16) == 4


def test_cpu_slots_and_thread_share() -> None:
    pool = SlotPool(cpu_count=8, gpu_indices=[], cpu_slots=4)
    assert pool.total == 4 and pool.free == 4
    assert all(s.threads == 2 and s.gpu_index is None for s in pool.slots)


def test_acquire_release_and_exhaustion() -> None:
    pool = SlotPool(cpu_count=2, gpu_indices=[], cpu_slots=2)
    a = pool.acquire(0)
    b = pool.acquire(0)
    assert {a[0].id, b[0].id} == {0, 1} and pool.free == 0
    with pytest.raises(ResourcesExhausted, match="0 of 2 free"):
        pool.acquire(0)
    pool.release(a)
    assert pool.free == 1
    assert pool.acquire(0) == a


def test_one_slot_per_gpu_and_gpu_requests() -> None:
    pool = SlotPool(cpu_count=16, gpu_indices=[0, 1, 2])
    assert pool.total == 3 and pool.gpu_slots == 3
    two = pool.acquire(2)
    assert [s.gpu_index for s in two] == [0, 1]
    with pytest.raises(ResourcesExhausted):
        pool.acquire(2)
    with pytest.raises(ResourcesExhausted, match="has 3"):
        pool.acquire(4)


def test_cpu_tasks_prefer_slots_without_gpu() -> None:
    pool = SlotPool(cpu_count=8, gpu_indices=[0], cpu_slots=3)
    assert pool.acquire(0)[0].gpu_index is None
    assert pool.acquire(1)[0].gpu_index == 0


def test_invalid_cpu_slots() -> None:
    with pytest.raises(ValueError):
        SlotPool(cpu_count=2, gpu_indices=[], cpu_slots=0)


def test_ranks_sharing_an_agent_see_the_groups_gpus_with_their_own_at_local_rank() -> None:
    """As torchrun and Ray Train: CUDA_VISIBLE_DEVICES is the union of the group's GPUs, cuda:LOCAL_RANK its own."""
    pool = SlotPool(cpu_count=8, gpu_indices=[0, 1, 2, 3])
    gangs = GangSlots(pool)
    lone = pool.acquire(1)  # another task holds GPU 0
    assert [s.gpu_index for s in lone] == [0]
    seen = {}
    for local_rank in (1, 0, 2):  # RunTask calls arrive in any order
        slots, visible = gangs.acquire("j1", 1, local_rank, 3, 1)
        seen[local_rank] = (slots[0].gpu_index, visible)
    visible = seen[0][1]
    assert visible == (1, 2, 3) and all(v == visible for _, v in seen.values())
    for local_rank, (own, _) in seen.items():
        assert visible[local_rank] == own  # torch.cuda.set_device(LOCAL_RANK) picks the rank's own GPU
    assert pool.free == 0
    for local_rank, (own, _) in seen.items():
        pool.release(tuple(s for s in pool.slots if s.gpu_index == own))
        gangs.finished("j1", 1, local_rank)
    assert pool.free == 3


def test_a_groups_share_nobody_claims_is_given_back() -> None:
    pool = SlotPool(cpu_count=8, gpu_indices=[0, 1])
    gangs = GangSlots(pool)
    slots, visible = gangs.acquire("j1", 1, 0, 2, 1)  # rank 1 never comes (placed elsewhere after all)
    assert visible == (0, 1) and pool.free == 0
    pool.release(slots)
    gangs.finished("j1", 1, 0)
    assert pool.free == 2
    slots, visible = gangs.acquire("j2", 1, 0, 1, 1)  # alone on the agent: its own GPU only
    assert visible == (slots[0].gpu_index,)
