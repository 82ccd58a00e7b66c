"""GPU inventory and readings through NVML; no NVML (or no GPU) simply means no GPUs."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from tensorfleet_agent.core.types import GpuInfo, GpuTelemetry

log = logging.getLogger(__name__)


class Gpus:
    """Lazily initialised NVML; every call is safe on a machine without NVIDIA drivers."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self._initialised = False

    def _init(self) -> None:
        if self._initialised:
            return
        self._initialised = True
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
            log.info("NVML: %d GPU(s)", count)
        except Exception as exc:  # NVMLError_LibraryNotFound, driver mismatch, no module...
            log.info("no GPUs visible through NVML (%s)", type(exc).__name__)
            self._handles = []

    def inventory(self) -> tuple[GpuInfo, ...]:
        with self._lock:
            self._init()
            nv = self._nvml
            out = []
            for index, handle in enumerate(self._handles):
                try:
                    name = nv.nvmlDeviceGetName(handle)
                    uuid = nv.nvmlDeviceGetUUID(handle)
                    memory = nv.nvmlDeviceGetMemoryInfo(handle).total
                except Exception as exc:
                    log.warning("GPU %d unreadable: %s", index, exc)
                    continue
                out.append(GpuInfo(index, _text(name), _text(uuid), int(memory)))
            return tuple(out)

    def sample(self) -> tuple[GpuTelemetry, ...]:
        with self._lock:
            self._init()
            nv = self._nvml
            out = []
            for index, handle in enumerate(self._handles):
                util = temp = power = 0.0
                used = total = 0
                with contextlib.suppress(Exception):
                    util = float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
                with contextlib.suppress(Exception):
                    mem = nv.nvmlDeviceGetMemoryInfo(handle)
                    used, total = int(mem.used), int(mem.total)
                with contextlib.suppress(Exception):
                    temp = float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
                with contextlib.suppress(Exception):
                    power = nv.nvmlDeviceGetPowerUsage(handle) / 1000.0
                out.append(GpuTelemetry(index, util, used, total, temp, power))
            return tuple(out)

    def processes(self) -> list[tuple[int, int, int]]:
        """(GPU index, pid, bytes of GPU memory) of every compute and graphics process on each GPU (desk mode)."""
        with self._lock:
            self._init()
            nv = self._nvml
            out = []
            for index, handle in enumerate(self._handles):
                seen: set[int] = set()
                for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                    try:
                        procs = getattr(nv, query)(handle)
                    except Exception as exc:
                        log.debug("GPU %d: %s: %s", index, query, exc)
                        continue
                    for proc in procs:
                        pid = int(proc.pid)
                        if pid not in seen:
                            seen.add(pid)
                            out.append((index, pid, int(proc.usedGpuMemory or 0)))
            return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
