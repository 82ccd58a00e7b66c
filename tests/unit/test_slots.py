from __future__ import annotations

import pytest

from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.runtime.slots import SlotPool, default_cpu_slots


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
