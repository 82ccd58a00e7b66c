"""Owner activity on the GPUs: memory held by processes that are not the agent's (NVML, through the agent's GPU
reader; a fake reader in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import psutil

from tensorfleet_agent.desk.signals import Reading


class GpuProcessReader(Protocol):
    def processes(self) -> list[tuple[int, int, int]]:
        """(GPU index, pid, bytes of GPU memory) of every process on a GPU."""
        ...


class GpuUse:
    name = "gpu"
    period = 0.5

    def __init__(self, reader: GpuProcessReader, threshold_bytes: int, ours: Callable[[], set[int]]) -> None:
        self.reader = reader
        self.threshold = threshold_bytes
        self.ours = ours  # pids of the agent and everything under it

    def read(self) -> Reading | None:
        procs = self.reader.processes()
        return Reading(busy=gpu_busy(procs, self.ours(), self.threshold))

    def close(self) -> None:
        pass


def gpu_busy(procs: Iterable[tuple[int, int, int]], ours: set[int], threshold: int) -> str:
    """A sentence when other processes hold more than `threshold` bytes of one GPU, else ""."""
    by_gpu: dict[int, list[tuple[int, int]]] = {}
    for gpu, pid, used in procs:
        if pid not in ours:
            by_gpu.setdefault(gpu, []).append((used, pid))
    for gpu, others in sorted(by_gpu.items()):
        total = sum(used for used, _ in others)
        if total > threshold:
            used, pid = max(others)
            return (
                f"other programs use {total / 2**20:.0f} MiB of GPU {gpu} (most: pid {pid} {_name(pid)}, "
                f"{used / 2**20:.0f} MiB; threshold {threshold / 2**20:.0f} MiB)"
            )
    return ""


def _name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"
