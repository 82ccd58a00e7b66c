"""What the test and benchmark helpers share about the real processes they start."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil


def wait_for_ready_file(
    proc: subprocess.Popen[bytes], ready: Path, log: Path, timeout: float, what: str, on_timeout: Callable[[], None]
) -> dict[str, Any]:
    """The JSON a process writes once it serves; a clear error with its log if it dies or stalls first."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            on_timeout()
            raise TimeoutError(f"{what} not ready in {timeout}s:\n{log.read_text()}")
        time.sleep(0.02)
    body: dict[str, Any] = json.loads(ready.read_text())
    return body


def memory(pids: list[int]) -> dict[str, float]:
    """Resident and proportional memory of a set of processes, in MiB."""
    rss = pss = 0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return {"rss_mib": round(rss / 2**20, 1), "pss_mib": round(pss / 2**20, 1), "processes": len(pids)}


class Startable(Protocol):
    def spawn(self) -> None: ...
    def wait_ready(self, timeout: float = ...) -> Any: ...


T = TypeVar("T", bound=Startable)


def start_together(*processes: T) -> tuple[T, ...]:
    """Spawn every process, then wait for each to be ready: the starts overlap, as daemons do on real machines,
    and a test waits for the slowest start instead of for the sum of them. Returns them, in order."""
    for process in processes:
        process.spawn()
    for process in processes:
        process.wait_ready()
    return processes
