"""GPU inventory and readings through NVML; no NVML (or no GPU) simply means no GPUs."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

from tensorfleet_agent.core.types import GpuInfo, GpuTelemetry

log = logging.getLogger(__name__)


def allowed_gpus(visible: str | None, uuids: list[str]) -> list[int]:
    """The NVML indexes this agent may use, from the CUDA_VISIBLE_DEVICES it was started with (a Slurm allocation's
    GRES, a container's devices): None = every GPU; its entries are indexes or UUIDs (a prefix of at least
    "GPU-" and 4 more characters, as CUDA takes them); "" / "-1" / an unknown entry end the list as CUDA does."""
    if visible is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for raw in visible.split(","):
        entry = raw.strip()
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        else:
            matches = [i for i, u in enumerate(uuids) if len(entry) >= 8 and u.startswith(entry)]
            if len(matches) != 1:
                break  # CUDA stops at the first entry it cannot use
            index = matches[0]
        if index in out:
            break
        out.append(index)
    return out


class Gpus:
    """Lazily initialised NVML; every call is safe on a machine without NVIDIA drivers. Only the GPUs the agent's
    own CUDA_VISIBLE_DEVICES allows are seen (by their NVML index; tasks get CUDA_DEVICE_ORDER=PCI_BUS_ID, so a
    task's CUDA_VISIBLE_DEVICES names the same GPUs)."""

    def __init__(self, visible: str | None = None, from_env: bool = True) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] = []  # (NVML index, handle) of the GPUs this agent may use
        self._visible = os.environ.get("CUDA_VISIBLE_DEVICES") if from_env and visible is None else visible
        self._lock = threading.Lock()
        self._initialised = False

    def _init(self) -> None:
        if self._initialised:
            return
        self._initialised = True
        try:
            pynvml = _nvml_module()
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
            allowed = allowed_gpus(self._visible, uuids)
            self._handles = [(i, handles[i]) for i in allowed]
            self._nvml = pynvml
            if len(allowed) < count:
                log.info("NVML: %d GPU(s), %d allowed by CUDA_VISIBLE_DEVICES=%s", count, len(allowed), self._visible)
            else:
                log.info("NVML: %d GPU(s)", count)
        except Exception as exc:  # NVMLError_LibraryNotFound, driver mismatch, no module...
            log.info("no GPUs visible through NVML (%s)", type(exc).__name__)
            self._handles = []

    def inventory(self) -> tuple[GpuInfo, ...]:
        with self._lock:
            self._init()
            nv = self._nvml
            out = []
            for index, handle in self._handles:
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
            for index, handle in self._handles:
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
            for index, handle in self._handles:
                seen: set[int] = set()
                for query in ("compute", "graphics"):
                    try:
                        if query == "compute":
                            procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)
                        else:
                            procs = nv.nvmlDeviceGetGraphicsRunningProcesses(handle)
                    except Exception as exc:  # an older driver or pynvml without the call
                        log.debug("GPU %d: %s processes: %s", index, query, exc)
                        continue
                    for proc in procs:
                        pid = int(proc.pid)
                        if pid not in seen:
                            seen.add(pid)
                            out.append((index, pid, int(proc.usedGpuMemory or 0)))
            return out


def _nvml_module() -> Any:
    """pynvml, or the test-only fake NVML when TENSORFLEET_TEST_FAKE_GPUS is set (fake_gpus.py), said loudly."""
    from tensorfleet_agent.runtime import fake_gpus

    if not os.environ.get(fake_gpus.ENV):
        import pynvml

        return pynvml
    try:
        fake = fake_gpus.FakeNvml.from_env()
    except ValueError as exc:
        log.error("%s", exc)
        raise
    log.warning(
        "TEST ONLY: %s=%s: this agent reports %d FAKE GPU(s), not the machine's; never set it outside tests",
        fake_gpus.ENV,
        os.environ[fake_gpus.ENV],
        len(fake.totals),
    )
    return fake


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
