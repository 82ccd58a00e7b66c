"""GPU memory as the shares see it (blocking: NVML and the process table; call through asyncio.to_thread).

A task that shares a GPU was promised some of its memory (TaskSpec.gpu_memory_bytes). Whether another fits depends
on what other programs use there (processes outside the agent's tree); whether a task keeps to its promise on what
its own process tree uses, read from NVML's per-process list on every check (executor: once a second while
shared tasks run)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil

from tensorfleet_agent.core.sizes import format_size

#: (GPU index, pid, bytes) as Gpus.processes() gives them.
GpuProcess = tuple[int, int, int]


def tree(pid: int) -> set[int]:
    """The process and everything under it (empty once it is gone)."""
    try:
        root = psutil.Process(pid)
        return {pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.Error:
        return set()


def others_by_gpu(procs: Iterable[GpuProcess]) -> dict[int, int]:
    """GPU index -> the memory used there by processes outside this agent's tree (other programs, other agents)."""
    ours = tree(os.getpid())
    out: dict[int, int] = {}
    for gpu, pid, used in procs:
        if pid not in ours:
            out[gpu] = out.get(gpu, 0) + used
    return out


def ours_by_gpu(procs: Iterable[GpuProcess]) -> dict[int, int]:
    """GPU index -> the memory used there by this agent's own processes (its tasks, the ones sharing it included)."""
    ours = tree(os.getpid())
    out: dict[int, int] = {}
    for gpu, pid, used in procs:
        if pid in ours:
            out[gpu] = out.get(gpu, 0) + used
    return out


def used_by(procs: Iterable[GpuProcess], gpu: int, pids: set[int]) -> int:
    """The GPU memory the given processes use on one GPU."""
    return sum(used for index, pid, used in procs if index == gpu and pid in pids)


def over_share_line(gpu: int, used: int, share: int) -> str:
    """The warning a task that uses more than its share gets in its own log."""
    return (
        f"GPU memory over this task's share: its processes use {format_size(used)} of GPU {gpu}, "
        f"{format_size(used - share)} more than the {format_size(share)} it asked for (gpu_memory); tasks sharing "
        "the GPU may run out of memory"
    )
