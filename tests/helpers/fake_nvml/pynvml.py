"""A stand-in for NVML: two GPUs, for tests of GPU slots on machines without one. Put this folder first on
PYTHONPATH of an agent; TENSORFLEET_FAKE_GPUS sets how many GPUs it reports (default 2)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
_GIB = 2**30


def _count() -> int:
    return int(os.environ.get("TENSORFLEET_FAKE_GPUS", "2"))


def nvmlInit() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return _count()


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < _count():
        raise ValueError(f"no fake GPU {index}")
    return index


def nvmlDeviceGetName(handle: int) -> str:
    return "Fake GPU"


def nvmlDeviceGetUUID(handle: int) -> str:
    return f"GPU-fake-{handle}"


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:
    return SimpleNamespace(total=16 * _GIB, used=0, free=16 * _GIB)


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    return SimpleNamespace(gpu=0, memory=0)


def nvmlDeviceGetTemperature(handle: int, sensor: int) -> int:
    return 30


def nvmlDeviceGetPowerUsage(handle: int) -> int:
    return 10_000


def nvmlDeviceGetComputeRunningProcesses(handle: int) -> list[SimpleNamespace]:
    """The processes $TENSORFLEET_FAKE_GPU_PROCESSES (a JSON file: [[gpu, pid, bytes], ...]) lists for this GPU:
    a test's stand-in for another program on the GPU (desk mode)."""
    path = os.environ.get("TENSORFLEET_FAKE_GPU_PROCESSES", "")
    if not path or not os.path.exists(path):
        return []
    with open(path) as fh:
        rows = json.load(fh)
    return [SimpleNamespace(pid=pid, usedGpuMemory=used) for gpu, pid, used in rows if gpu == handle]


def nvmlDeviceGetGraphicsRunningProcesses(handle: int) -> list[SimpleNamespace]:
    return []
