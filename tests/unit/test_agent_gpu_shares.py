"""The agent's side of sharing a GPU by memory: slots (best fit, whole vs shared), the test-only fake NVML behind
Gpus, telemetry's per-GPU fields, the over-share check's arithmetic and the torch cap's environment."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.runtime import fake_gpus
from tensorfleet_agent.runtime.gpu_shares import others_by_gpu, over_share_line, used_by
from tensorfleet_agent.runtime.gpus import Gpus
from tensorfleet_agent.runtime.slots import GpuUse, SlotPool
from tensorfleet_agent.runtime.telemetry import TelemetrySampler
from tensorfleet_agent.workloads import gpu_cap

GIB = 1 << 30


def _pool(*totals_gib: int) -> SlotPool:
    indices = list(range(len(totals_gib)))
    return SlotPool(16, indices, None, {i: t * GIB for i, t in enumerate(totals_gib)})


def test_shares_pack_best_fit_and_a_third_goes_to_the_other_gpu() -> None:
    pool = _pool(16, 16)
    a = pool.acquire_share(6 * GIB, {})
    b = pool.acquire_share(6 * GIB, {})
    assert a is b and a.gpu_index == 0  # the fullest GPU that still fits: the one already shared
    assert pool.free == 1  # a shared GPU counts as one slot in use
    c = pool.acquire_share(6 * GIB, {})  # 4 GiB left on GPU 0: the other GPU
    assert c.gpu_index == 1 and pool.free == 0
    d = pool.acquire_share(4 * GIB, {})  # fits exactly in GPU 0's rest: best fit
    assert d.gpu_index == 0
    assert pool.gpu_use() == {0: GpuUse(16 * GIB, 3, False), 1: GpuUse(6 * GIB, 1, False)}


def test_whole_and_shared_never_mix() -> None:
    pool = _pool(16, 16)
    whole = pool.acquire(1)
    assert whole[0].gpu_index == 0
    shared = pool.acquire_share(2 * GIB, {})
    assert shared.gpu_index == 1
    with pytest.raises(ResourcesExhausted, match="task wants 1 slot"):
        pool.acquire(1)  # GPU 1 is shared: no whole-GPU task joins it
    assert pool.gpu_use()[0] == GpuUse(0, 0, True)
    with pytest.raises(ResourcesExhausted, match="GPU 0: held whole; GPU 1: 14GiB unpromised"):
        pool.acquire_share(15 * GIB, {})
    pool.release_share(shared, 2 * GIB)
    assert pool.free == 1 and pool.acquire(1)[0].gpu_index == 1  # its last share gone: whole again


def test_other_programs_memory_is_not_promised() -> None:
    pool = _pool(16, 16)
    slot = pool.acquire_share(10 * GIB, {0: 8 * GIB})  # GPU 0 has 8 GiB free only
    assert slot.gpu_index == 1
    with pytest.raises(ResourcesExhausted):
        pool.acquire_share(10 * GIB, {0: 8 * GIB})


def test_fake_gpus_setting() -> None:
    assert fake_gpus.parse_fake_gpus("2x16GiB") == [16 * GIB, 16 * GIB]
    assert fake_gpus.parse_fake_gpus("16GiB,24GiB") == [16 * GIB, 24 * GIB]
    assert fake_gpus.parse_fake_gpus("3") == [16 * GIB] * 3
    with pytest.raises(ValueError, match="TENSORFLEET_TEST_FAKE_GPUS"):
        fake_gpus.parse_fake_gpus("lots")


def test_gpus_reads_the_fake_through_the_nvml_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    procs = tmp_path / "procs.json"
    procs.write_text(json.dumps([[1, 4242, 3 * GIB], [1, 4343, GIB]]))
    monkeypatch.setenv(fake_gpus.ENV, "2x16GiB")
    monkeypatch.setenv(fake_gpus.PROCESSES_ENV, str(procs))
    with caplog.at_level(logging.WARNING):
        gpus = Gpus(from_env=False)
        inventory = gpus.inventory()
    assert "TEST ONLY" in caplog.text
    assert [(g.index, g.memory_total_bytes) for g in inventory] == [(0, 16 * GIB), (1, 16 * GIB)]
    assert sorted(gpus.processes()) == [(1, 4242, 3 * GIB), (1, 4343, GIB)]
    pool = SlotPool(8, [0, 1], None, {g.index: g.memory_total_bytes for g in inventory})
    pool.acquire_share(5 * GIB, {})
    pool.acquire(1)
    sample = TelemetrySampler(tmp_path, gpus, pool).sample(2, 0, 2)
    by_index = {g.index: g for g in sample.gpus}
    assert by_index[0].memory_reserved_bytes == 5 * GIB and by_index[0].shared_tasks == 1
    assert not by_index[0].exclusive and by_index[0].memory_used_bytes == 0
    assert by_index[1].exclusive and by_index[1].memory_used_bytes == 4 * GIB


def test_usage_of_others_and_of_a_task() -> None:
    procs = [(0, 1, GIB), (0, 2, 2 * GIB), (1, 1, 5 * GIB), (0, 999_999_999, 7 * GIB)]
    assert used_by(procs, 0, {1, 2}) == 3 * GIB
    assert used_by(procs, 1, {2}) == 0
    assert others_by_gpu(procs) == {0: 10 * GIB, 1: 5 * GIB}  # pids 1 and 2 are not under this process
    line = over_share_line(0, 8 * GIB, 6 * GIB)
    assert "8GiB of GPU 0" in line and "2GiB more than the 6GiB" in line


def test_torch_cap_reads_the_fraction(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, int]] = []
    torch = SimpleNamespace(cuda=SimpleNamespace(set_per_process_memory_fraction=lambda f, i: calls.append((f, i))))
    cuda1 = SimpleNamespace(type="cuda", index=1)
    monkeypatch.delenv(gpu_cap.ENV, raising=False)
    assert gpu_cap.cap_torch_memory(torch, cuda1) == 0.0 and not calls  # a whole GPU: no cap
    monkeypatch.setenv(gpu_cap.ENV, "0.375000")
    assert gpu_cap.cap_torch_memory(torch, SimpleNamespace(type="cpu", index=None)) == 0.0
    assert gpu_cap.cap_torch_memory(torch, cuda1) == 0.375
    assert calls == [(0.375, 1)]
    monkeypatch.setenv(gpu_cap.ENV, "nan")
    assert gpu_cap.gpu_memory_fraction() == 0.0


def test_task_sdk_caps_torch_with_the_share(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "agent" / "task_sdk" / "tensorfleet_task.py"
    spec = importlib.util.spec_from_file_location("tensorfleet_task_gpu_cap", path)
    assert spec is not None and spec.loader is not None
    sdk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sdk)
    calls: list[tuple[float, int]] = []
    cuda = SimpleNamespace(
        is_available=lambda: True,
        current_device=lambda: 0,
        set_per_process_memory_fraction=lambda f, i: calls.append((f, i)),
    )
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    monkeypatch.delenv(gpu_cap.ENV, raising=False)
    assert sdk.limit_gpu_memory() == 0.0 and not calls  # a whole GPU
    monkeypatch.setenv(gpu_cap.ENV, "0.5")
    assert sdk.gpu_memory_fraction() == 0.5
    assert sdk.limit_gpu_memory() == 0.5 and sdk.limit_gpu_memory(2) == 0.5
    assert calls == [(0.5, 0), (0.5, 2)]
