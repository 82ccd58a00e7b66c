"""A fake NVML for tests on machines without a GPU: TEST-ONLY, selected by TENSORFLEET_TEST_FAKE_GPUS.

`Gpus` (gpus.py) reads NVML through the functions of the `pynvml` module; this class has the same functions, so
inventory, sampling and per-process memory go through the very code that reads a real GPU. Settings:

- TENSORFLEET_TEST_FAKE_GPUS: the GPUs, "2x16GiB" (two of 16 GiB), "16GiB,24GiB" (one each), or "2" (16 GiB each).
- TENSORFLEET_TEST_FAKE_GPU_PROCESSES: a JSON file, [[gpu index, pid, bytes], ...], read on every call: the processes
  using each GPU and their memory (a test, or a task pretending to use its GPU, writes it). A GPU's used memory is
  the sum of its processes'.

Never set these on a real agent: its GPUs would be ignored and tasks told of GPUs that do not exist.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from tensorfleet_agent.core.sizes import parse_size

ENV = "TENSORFLEET_TEST_FAKE_GPUS"
PROCESSES_ENV = "TENSORFLEET_TEST_FAKE_GPU_PROCESSES"
_DEFAULT_MEMORY = 16 << 30


def parse_fake_gpus(text: str) -> list[int]:
    """The GPUs' memory totals from TENSORFLEET_TEST_FAKE_GPUS; ValueError names the setting and the text."""
    text = text.strip()
    count, sep, size = text.partition("x")
    try:
        if sep and count.strip().isdigit():
            totals = [parse_size(size, ENV)] * int(count)
        elif text.isdigit():
            totals = [_DEFAULT_MEMORY] * int(text)
        else:
            totals = [parse_size(part, ENV) for part in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"{ENV}: {exc}; give e.g. '2x16GiB', '16GiB,24GiB' or '2'") from None
    if not 1 <= len(totals) <= 64:
        raise ValueError(f"{ENV} must describe 1 to 64 GPUs, got {text!r}")
    return totals


class FakeNvml:
    """The part of pynvml that gpus.Gpus calls, over fake GPUs (handles are their indexes)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, totals: list[int], processes_file: str = "") -> None:
        self.totals = totals
        self.processes_file = processes_file

    @classmethod
    def from_env(cls) -> FakeNvml:
        return cls(parse_fake_gpus(os.environ[ENV]), os.environ.get(PROCESSES_ENV, ""))

    def _rows(self, handle: int) -> list[tuple[int, int]]:
        """(pid, bytes) of the processes the file lists on this GPU; none while it is missing or half written."""
        if not self.processes_file:
            return []
        try:
            with open(self.processes_file) as fh:
                rows = json.load(fh)
            return [(int(pid), int(used)) for gpu, pid, used in rows if int(gpu) == handle]
        except (OSError, ValueError, TypeError):
            return []

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.totals)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.totals):
            raise ValueError(f"no fake GPU {index}")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return f"Fake GPU {self.totals[handle] >> 30}GiB (test only)"

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-fake-{handle:04d}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        total = self.totals[handle]
        used = min(total, sum(used for _pid, used in self._rows(handle)))
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=50 if self._rows(handle) else 0, memory=0)

    def nvmlDeviceGetTemperature(self, handle: int, _sensor: int) -> int:
        return 30

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 10_000  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._rows(handle)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[SimpleNamespace]:
        return []
