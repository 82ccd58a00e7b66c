"""How much of a GPU a task takes: whole GPUs, or a share of one GPU's memory (issue 24, "Sharing a GPU by memory").

One place for the arithmetic that quotas, fair-share usage, placement and the attempt's TaskSpec all need, so a
shared task counts the same everywhere. Pure functions over a stored job spec (`JobSpec.to_dict()`), no I/O.
"""

from __future__ import annotations

from typing import Any

from tensorfleet_desktop.controller.ports import AgentView
from tensorfleet_desktop.controller.scheduler import UNKNOWN_SHARE, GpuRoom

__all__ = ["UNKNOWN_SHARE", "agent_capacity", "gpu_amount", "memory_fraction", "share_bytes", "shares_gpu"]


def shares_gpu(spec: dict[str, Any]) -> bool:
    """Does a task of this spec share one GPU by memory (`gpu_memory` or `gpu_fraction`)?"""
    return bool(_memory(spec) or _fraction(spec))


def gpu_amount(spec: dict[str, Any], total_memory: int = 0) -> float:
    """GPUs one task of `spec` takes, for quotas and usage: `gpus` for whole GPUs; for a shared task its share of the
    GPU: gpu_fraction, or gpu_memory / total_memory (at most 1), or UNKNOWN_SHARE when the total is unknown."""
    fraction = _fraction(spec)
    if fraction:
        return fraction
    memory = _memory(spec)
    if memory:
        if total_memory > 0:
            return min(1.0, memory / total_memory)
        return UNKNOWN_SHARE
    gpus = spec.get("gpus") or 0
    return float(gpus) if isinstance(gpus, int | float) and not isinstance(gpus, bool) else 0.0


def share_bytes(spec: dict[str, Any], total_memory: int) -> int:
    """The GPU memory (bytes) one task of a sharing `spec` is promised on a GPU of `total_memory` bytes: gpu_memory,
    or gpu_fraction of the total (0 when the total is unknown: a fraction cannot be turned into bytes). 0 for a
    whole-GPU spec."""
    memory = _memory(spec)
    if memory:
        return memory
    fraction = _fraction(spec)
    if fraction and total_memory > 0:
        return max(1, int(total_memory * fraction))
    return 0


def memory_fraction(share: int, total_memory: int) -> float:
    """The cap a torch task applies (`torch.cuda.set_per_process_memory_fraction`): its share of the GPU's memory,
    in (0, 1]; 0 when either is unknown (no cap)."""
    if share <= 0 or total_memory <= 0:
        return 0.0
    return min(1.0, share / total_memory)


def _memory(spec: dict[str, Any]) -> int:
    value = spec.get("gpu_memory") or 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _fraction(spec: dict[str, Any]) -> float:
    value = spec.get("gpu_fraction") or 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        return 0.0
    return float(value)


def agent_capacity(view: AgentView, shares: list[tuple[int, int]]) -> tuple[int, int, tuple[GpuRoom, ...]]:
    """(free slots, free GPU slots, its GPUs as the scheduler packs them) of an agent, counting the shares this
    controller dispatched there, as (GPU index, bytes), beside its last telemetry: between two samples nothing is
    promised twice. A GPU's free memory is its total less the larger of what NVML says is used and what was
    promised to shares (ours, or the agent's last word); a GPU that shares use is one slot in use, however many
    tasks share it."""
    ours: dict[int, int] = {}
    for index, memory in shares:
        ours[index] = ours.get(index, 0) + memory
    held = len(view.placed) - len(shares) + len(ours)  # slots our attempts hold: a shared GPU counts once
    total = view.slots_total or view.slots_free + len(view.placed)
    free_slots = max(0, total - held)
    free_gpu_slots = max(0, view.gpu_slots - held) if view.gpu_slots else 0
    rooms = []
    for gpu in view.gpus:
        promised = max(gpu.reserved_memory, ours.get(gpu.index, 0))
        # held whole by its last telemetry: a share we just sent there went to another GPU (the agent chose)
        shared = (gpu.shared_tasks > 0 or gpu.index in ours) and not gpu.exclusive
        rooms.append(
            GpuRoom(
                index=gpu.index,
                total_memory=gpu.total_memory,
                free_memory=max(0, gpu.total_memory - max(gpu.used_memory, promised)),
                whole=not shared and not gpu.exclusive,
                exclusive=gpu.exclusive,
            )
        )
    if rooms:  # GPUs its telemetry says are taken (a whole-GPU task, a CPU task on a GPU slot) are not free either
        free_gpu_slots = min(free_gpu_slots, sum(1 for r in rooms if r.whole))
    return free_slots, free_gpu_slots, tuple(rooms)
