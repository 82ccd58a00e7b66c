"""Machine facts (GetInfo) and readings (StreamTelemetry)."""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import sys
import time
from pathlib import Path

import psutil

from tensorfleet_agent.core.types import GpuTelemetry, Telemetry
from tensorfleet_agent.core.version import installed_version
from tensorfleet_agent.runtime.gpus import Gpus
from tensorfleet_agent.runtime.slots import SlotPool


def package_version(name: str) -> str:
    """Installed version without importing the package (torch takes seconds to import)."""
    return installed_version(name) or ""


def machine_facts() -> dict[str, str | int]:
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python_version": sys.version.split()[0],
        "torch_version": package_version("torch"),
        "sklearn_version": package_version("scikit-learn"),
        "cpu_count": os.cpu_count() or 1,
        "memory_total_bytes": psutil.virtual_memory().total,
    }


def disk_free(path: Path) -> int:
    return disk_space(path)[0]


def disk_space(path: Path) -> tuple[int, int]:
    """(free, total) bytes of the file system holding `path`; (0, 0) when it cannot be read."""
    try:
        usage = psutil.disk_usage(str(path))
    except OSError:
        return 0, 0
    return int(usage.free), int(usage.total)


class TelemetrySampler:
    def __init__(self, data_dir: Path, gpus: Gpus, slots: SlotPool | None = None) -> None:
        self.data_dir = data_dir
        self.gpus = gpus
        self.slots = slots  # what each GPU's slot holds: shared tasks and their promises, or one task whole
        psutil.cpu_percent(None)  # prime the CPU counter: the first real reading is then meaningful

    def sample(self, slots_total: int, slots_free: int, tasks_running: int) -> Telemetry:
        """Blocking (psutil, NVML): call through asyncio.to_thread."""
        mem = psutil.virtual_memory()
        gpus: tuple[GpuTelemetry, ...] = self.gpus.sample()
        if self.slots is not None:
            use = self.slots.gpu_use()
            gpus = tuple(
                dataclasses.replace(
                    g, memory_reserved_bytes=u.reserved, shared_tasks=u.shared_tasks, exclusive=u.exclusive
                )
                if (u := use.get(g.index)) is not None
                else g
                for g in gpus
            )
        free, total = disk_space(self.data_dir)
        return Telemetry(
            time=time.time(),
            cpu_percent=float(psutil.cpu_percent(None)),
            memory_used_bytes=int(mem.total - mem.available),
            memory_total_bytes=int(mem.total),
            disk_free_bytes=free,
            disk_total_bytes=total,
            gpus=gpus,
            slots_total=slots_total,
            slots_free=slots_free,
            tasks_running=tasks_running,
        )
