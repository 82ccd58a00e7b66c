"""The GPU memory cap of a task that shares its GPU: the agent sets TENSORFLEET_GPU_MEMORY_FRACTION (its share of
the GPU's memory, (0, 1]) in the worker's environment; torch workloads apply it once CUDA is up, so the caching
allocator raises an out-of-memory error in this task instead of taking memory promised to the others."""

from __future__ import annotations

import math
import os
from typing import Any

ENV = "TENSORFLEET_GPU_MEMORY_FRACTION"  # set by the worker from its run command (executor._memory_fraction)


def gpu_memory_fraction() -> float:
    """This task's share of its GPU's memory; 0.0 when it holds the GPU whole (or the value is unreadable)."""
    try:
        value = float(os.environ.get(ENV, "") or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and 0 < value <= 1 else 0.0


def cap_torch_memory(torch: Any, device: Any) -> float:
    """torch.cuda.set_per_process_memory_fraction(share, device) on a CUDA device when the task shares its GPU;
    returns the fraction applied (0.0: none)."""
    fraction = gpu_memory_fraction()
    if not fraction or getattr(device, "type", "") != "cuda":
        return 0.0
    index = device.index if device.index is not None else 0
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    print(f"GPU memory capped at {fraction:.1%} of cuda:{index} (this task shares the GPU)", flush=True)
    return fraction
