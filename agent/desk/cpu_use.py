"""Owner activity on the CPU: the share of the machine used by processes that are not the agent's (psutil)."""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil

from tensorfleet_agent.desk.signals import Reading


class CpuUse:
    name = "cpu"
    period = 1.0

    def __init__(self, threshold_percent: float, ours: Callable[[], set[int]]) -> None:
        self.threshold = threshold_percent
        self.ours = ours
        self._procs: dict[int, psutil.Process] = {}
        self._cores = os.cpu_count() or 1
        psutil.cpu_percent(None)  # primes the counter: the next reading covers the time since

    def read(self) -> Reading | None:
        total = psutil.cpu_percent(None)  # of the whole machine, since the last read
        mine = 0.0
        pids = self.ours()
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    self._procs[pid] = proc = psutil.Process(pid)
                    proc.cpu_percent(None)  # primed: counted from the next read
                    continue
                mine += proc.cpu_percent(None)  # of one core
            except psutil.Error:
                self._procs.pop(pid, None)
        other = max(0.0, total - mine / self._cores)
        if other > self.threshold:
            return Reading(busy=f"other programs use {other:.0f}% of the CPU (threshold {self.threshold:g}%)")
        return Reading()

    def close(self) -> None:
        pass
