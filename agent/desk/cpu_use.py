"""Owner activity on the CPU: the share of the machine used by processes that are not the agent's (psutil).

The agent's share is counted in CPU seconds over each interval: a process of it seen for the first time that started
within the interval counts with all its CPU time (a task starting up, an env build's uv), and what its processes
reaped meanwhile (children that came and went between two reads) counts through their children CPU times; neither
is the owner's."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil

from tensorfleet_agent.desk.signals import Reading

# psutil's create_time comes from clock ticks since boot: a process started just after a read may look a little
# older than it.
_START_SLACK = 0.1


class CpuUse:
    name = "cpu"
    period = 1.0

    def __init__(
        self,
        threshold_percent: float,
        ours: Callable[[], set[int]],
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.threshold = threshold_percent
        self.ours = ours
        self._monotonic, self._wall = monotonic, wall
        self._cores = os.cpu_count() or 1
        # pid -> (process, its own user+system seconds, its reaped children's) at the last read
        self._procs: dict[int, tuple[psutil.Process, float, float]] = {}
        psutil.cpu_percent(None)  # primes the counter: the next reading covers the time since
        self._last, self._last_wall = self._monotonic(), self._wall()
        for pid in self.ours():  # the agent's processes now: counted from the first read on
            self._track(pid, started_after=None)

    def _track(self, pid: int, started_after: float | None) -> float:
        """Start following `pid`; the CPU seconds to count for it now (all of them if it started after
        `started_after`, else none: its time before is not this interval's)."""
        try:
            proc = psutil.Process(pid)
            own, kids = _times(proc)
            new = started_after is not None and proc.create_time() >= started_after - _START_SLACK
        except psutil.Error:
            return 0.0
        self._procs[pid] = (proc, own, kids)
        return own + kids if new else 0.0

    def read(self) -> Reading | None:
        total = psutil.cpu_percent(None)  # of the whole machine, since the last read
        now, wall = self._monotonic(), self._wall()
        elapsed, since = now - self._last, self._last_wall
        self._last, self._last_wall = now, wall
        pids = self.ours()
        mine = 0.0  # CPU seconds of the agent's processes in this interval
        reaped = 0.0  # of what the agent's processes reaped in it (children's times)
        gone = 0.0  # of the processes followed that are gone: reaped with their time already counted
        for pid in list(self._procs):
            if pid not in pids:
                _proc, own, kids = self._procs.pop(pid)
                gone += own + kids
        for pid in pids:
            known = self._procs.get(pid)
            if known is None:
                mine += self._track(pid, since)
                continue
            proc, own, kids = known
            try:
                now_own, now_kids = _times(proc)
            except psutil.Error:
                del self._procs[pid]
                continue
            self._procs[pid] = (proc, now_own, now_kids)
            mine += max(0.0, now_own - own)
            reaped += max(0.0, now_kids - kids)
        mine += max(0.0, reaped - gone)  # children that exited since their last reading or unseen
        share = 100.0 * mine / (max(elapsed, 1e-3) * self._cores)
        other = max(0.0, total - share)
        if other > self.threshold:
            return Reading(busy=f"other programs use {other:.0f}% of the CPU (threshold {self.threshold:g}%)")
        return Reading()

    def close(self) -> None:
        pass


def _times(proc: psutil.Process) -> tuple[float, float]:
    """A process's own CPU seconds (user+system) and those of the children it has reaped."""
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system
