"""Desk mode's monitor: polls the owner-activity signals without blocking the loop, decides whether the workstation
lends itself, and when the owner comes back hands it back: every running task is preempted (checkpoint first where
the workload can, within HANDBACK_GRACE) so the GPU and CPU are free within 2 s of the first input event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psutil

from tensorfleet_agent.core.errors import ResourcesExhausted
from tensorfleet_agent.core.types import DeskStatus
from tensorfleet_agent.desk.schedule import Hours
from tensorfleet_agent.desk.signals import ActivitySignal, Reading

log = logging.getLogger(__name__)
#: How long a workload that can checkpoint gets to save one and stop when the owner returns; then it is killed
#: (its worker gets SIGTERM, SIGKILL one second later): the whole hand-back stays within 2 s.
HANDBACK_GRACE = 0.7
PAUSED = "paused by the owner (tensorfleet-agent desk pause)"


@dataclass(frozen=True)
class DeskConfig:
    idle_seconds: float = 600.0  # --desk-idle: no owner activity this long before it lends
    hours: Hours | None = None  # --desk-hours: it lends only within them
    gpu_memory_bytes: int = 512 * 2**20  # --desk-gpu-memory: other processes' GPU memory that means "in use"
    cpu_percent: float = 25.0  # --desk-cpu-percent: other processes' share of the CPU that means "in use"
    display: str = ""  # --desk-display (default $DISPLAY)


def agent_pids() -> set[int]:
    """The agent and every process under it (fork server, workers, what tasks started)."""
    me = psutil.Process(os.getpid())
    try:
        return {me.pid, *(p.pid for p in me.children(recursive=True))}
    except psutil.Error:
        return {me.pid}


class DeskMonitor:
    def __init__(
        self,
        config: DeskConfig,
        signals: list[ActivitySignal],
        preempt_all: Callable[[str, float], list[str]],
        tasks_running: Callable[[], int],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.signals = signals
        self._preempt_all = preempt_all
        self._tasks_running = tasks_running
        self._on_change = on_change
        self.paused = False
        self._readings: dict[str, Reading | None] = {s.name: None for s in signals}
        self._last_busy = time.monotonic()  # other programs' GPU/CPU use: quiet this long before lending
        self._busy_reason = ""
        self._lending = False
        self._reason = "starting: reading the owner's activity"
        self._since = time.time()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle

    def start(self) -> None:
        for signal in self.signals:
            self._tasks.append(asyncio.create_task(self._poll(signal), name=f"desk-{signal.name}"))
        if not any(s.name in ("x11", "logind") for s in self.signals):
            log.warning("desk mode: no desktop session to read input from; only GPU and CPU use count")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # the agent's stop goes on regardless
                await task
        for signal in self.signals:
            await asyncio.to_thread(signal.close)

    async def _poll(self, signal: ActivitySignal) -> None:
        while True:
            try:
                reading = await asyncio.to_thread(signal.read)
            except Exception:  # a signal that fails must never stop the others, nor the agent
                log.exception("desk mode: reading %s failed", signal.name)
                reading = None
            self._readings[signal.name] = reading
            try:
                self.evaluate()
            except Exception:  # nor may a failed decision end this poll: its reading would stay frozen
                log.exception("desk mode: deciding after reading %s failed", signal.name)
            await asyncio.sleep(signal.period)

    # ---- the decision

    @property
    def lending(self) -> bool:
        return self._lending

    def input_idle(self) -> float | None:
        idles = [r.idle_seconds for r in self._readings.values() if r is not None and r.idle_seconds is not None]
        return min(idles) if idles else None

    def evaluate(self, now: float | None = None, wall: datetime | None = None) -> None:
        """Decide from the latest readings; on the owner's return, hand the machine back at once."""
        now = time.monotonic() if now is None else now
        busy = next((r.busy for r in self._readings.values() if r is not None and r.busy), "")
        if busy:
            self._last_busy, self._busy_reason = now, busy
        lending, reason = self._decide(now, busy, wall or datetime.now())
        if lending != self._lending:
            self._lending, self._since = lending, time.time()
            log.info("desk mode: %s (%s)", "lending" if lending else "not lending", reason)
            self._on_change()
        self._reason = reason
        if not lending and self._tasks_running() > 0:
            handed = self._preempt_all(f"the workstation's owner is back: {reason}", HANDBACK_GRACE)
            if handed:
                log.info("desk mode: handing the machine back: %d task(s) preempted (%s)", len(handed), reason)

    def _decide(self, now: float, busy: str, wall: datetime) -> tuple[bool, str]:
        cfg = self.config
        if self.paused:
            return False, PAUSED
        if cfg.hours is not None and not cfg.hours.contains(wall):
            return False, f"outside the lending hours {cfg.hours.text}"
        if busy:
            return False, busy
        idle = self.input_idle()
        if idle is not None and idle < cfg.idle_seconds:
            return False, f"keyboard or mouse used {_ago(idle)} ago; lends after {_ago(cfg.idle_seconds)} idle"
        quiet = now - self._last_busy
        if quiet < cfg.idle_seconds:
            last = self._busy_reason or "the agent started"
            return False, f"{last} {_ago(quiet)} ago; lends after {_ago(cfg.idle_seconds)} quiet"
        if idle is None:
            return True, f"lending: no other GPU or CPU use for {_ago(quiet)} (no desktop session seen)"
        return True, f"lending: no keyboard or mouse input for {_ago(idle)}"

    # ---- what the rest of the agent asks

    def status(self) -> DeskStatus:
        idle = self.input_idle()
        return DeskStatus(
            owner_active=not self._lending and not self.paused,
            paused=self.paused,
            reason=self._reason,
            since=self._since,
            idle_seconds=-1.0 if idle is None else idle,
            idle_threshold_seconds=self.config.idle_seconds,
            schedule=self.config.hours.text if self.config.hours else "",
        )

    def state(self) -> str:
        """The mDNS TXT value: lending, owner_active or paused."""
        return "paused" if self.paused else "lending" if self._lending else "owner_active"

    def check_lending(self) -> None:
        """RunTask: refused (the agent's own no: the controller re-queues elsewhere) while not lending."""
        if not self._lending:
            raise ResourcesExhausted(f"this workstation is not lent now (desk mode): {self._reason}")

    def set_paused(self, paused: bool) -> DeskStatus:
        if paused != self.paused:
            self.paused = paused
            log.info("desk mode: %s by the owner", "paused" if paused else "resumed")
            self.evaluate()
            self._on_change()
        return self.status()


def _ago(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
