"""Suspend the machine after it has had no work for a while (--suspend-when-idle), announcing it first.

The agent says `going_to_sleep` (telemetry and mDNS) and waits until its telemetry carried that to the controller,
so the controller shows it SLEEPING (and can wake it by Wake-on-LAN) instead of LOST. Then it runs the suspend
command; when the command returns, the machine has resumed: the flag is cleared and the idle clock starts again.
A task arriving while it announces cancels the suspend; one arriving while the command runs is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable
from enum import Enum

from tensorfleet_agent.core.errors import ResourcesExhausted

log = logging.getLogger(__name__)
DEFAULT_COMMAND = "systemctl suspend"
ANNOUNCE_EXTRA = 0.3  # after the telemetry that says going_to_sleep was handed to gRPC: its bytes leave
_DURATION = re.compile(r"(\d+(?:\.\d*)?)\s*(ms|s|m|h|d)?")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str) -> float:
    """'90s', '30m', '1h30m', '1.5h' or plain seconds -> seconds; ValueError naming `what` otherwise."""
    body = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION.match(body, pos)
        if match is None or match.end() == pos:
            break
        total += float(match[1]) * _UNIT[match[2]]
        pos = match.end()
        while pos < len(body) and body[pos] == " ":
            pos += 1
    if not body or pos != len(body):
        raise ValueError(f"{what} must be a duration like 90s, 30m, 1h30m or seconds, got {text!r}")
    return total


def parse_command(text: str, what: str = "--suspend-command") -> tuple[str, ...]:
    """The command as argv (shlex, never a shell); its program must exist now, not fail at the first suspend."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"{what} {text!r}: {exc}") from None
    if not argv:
        raise ValueError(f"{what} is empty")
    if shutil.which(argv[0]) is None:
        raise ValueError(f"{what}: {argv[0]!r} is not an executable file, nor a command on PATH")
    return argv


class PowerState(Enum):
    AWAKE = "awake"
    ANNOUNCING = "announcing"  # going_to_sleep said; the command has not started: a task still cancels it
    SUSPENDING = "suspending"  # the command runs (the machine goes down and comes back)


class IdleSuspender:
    """Watches `busy()`; after `idle_seconds` without work, announces and runs `command`."""

    def __init__(
        self,
        idle_seconds: float,
        command: tuple[str, ...],
        busy: Callable[[], bool],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if idle_seconds <= 0:
            raise ValueError(f"--suspend-when-idle must be > 0, got {idle_seconds:g}s")
        self.idle_seconds = idle_seconds
        self.command = command
        self._busy = busy
        self._on_change = on_change  # the mDNS TXT record follows the state
        self.state = PowerState.AWAKE
        self.suspends = 0
        self._last_work = time.monotonic()
        self._telemetry_period = 1.0  # the longest period a controller asked telemetry for
        self._announced = asyncio.Event()
        self._cancelled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def going_to_sleep(self) -> bool:
        return self.state is not PowerState.AWAKE

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="idle-suspend")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def telemetry_period(self, seconds: float) -> None:
        """A telemetry stream opened with this period: the announcement waits at least one of them."""
        self._telemetry_period = max(self._telemetry_period, seconds)

    def telemetry_sent(self, going_to_sleep: bool) -> None:
        """A telemetry sample was handed to a controller's stream."""
        if going_to_sleep:
            self._announced.set()

    def task_arriving(self) -> None:
        """RunTask: work arrives. Cancels a suspend being announced; refused once the command runs."""
        if self.state is PowerState.SUSPENDING:
            raise ResourcesExhausted(  # the agent's own 'no': the controller re-queues, counts nothing
                "this machine is suspending (--suspend-when-idle: no work for "
                f"{self.idle_seconds:g}s); wake it and retry"
            )
        self._last_work = time.monotonic()
        if self.state is PowerState.ANNOUNCING:
            log.info("a task arrived: suspend cancelled")
            self._cancelled.set()

    async def _loop(self) -> None:
        poll = min(1.0, max(0.05, self.idle_seconds / 20))
        while True:
            await asyncio.sleep(poll)
            now = time.monotonic()
            if self._busy():
                self._last_work = now
            elif now - self._last_work >= self.idle_seconds:
                await self._suspend()
                self._last_work = time.monotonic()

    def _set(self, state: PowerState) -> None:
        self.state = state
        try:
            self._on_change()
        except Exception:  # the advertisement must never stop the power logic
            log.exception("could not update the advertisement")

    async def _suspend(self) -> None:
        self._announced.clear()
        self._cancelled.clear()
        log.info("no work for %.0fs: going to sleep (announcing it first)", self.idle_seconds)
        self._set(PowerState.ANNOUNCING)
        try:
            # Until a controller got a sample that says so (none streaming: nobody to tell), or a task came.
            await _first(self._announced, self._cancelled, timeout=2 * self._telemetry_period + 0.5)
            if not self._cancelled.is_set():
                await _first(self._cancelled, timeout=ANNOUNCE_EXTRA)
            if self._cancelled.is_set() or self._busy():
                return
            self.state = PowerState.SUSPENDING
            await self._run_command()
        finally:
            self._set(PowerState.AWAKE)

    async def _run_command(self) -> None:
        self.suspends += 1
        log.info("suspending the machine: %s", shlex.join(self.command))
        env = dict(os.environ, TENSORFLEET_AGENT_PID=str(os.getpid()))
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            _, stderr = await proc.communicate()
        except OSError as exc:
            log.error("suspend command %s could not start: %s", shlex.join(self.command), exc)
            return
        if proc.returncode != 0:
            message = stderr.decode(errors="replace").strip()[-500:]
            log.error("suspend command exited with %s: %s", proc.returncode, message)
            return
        log.info("resumed after %.1fs; the idle clock starts again", time.monotonic() - started)


async def _first(*events: asyncio.Event, timeout: float) -> None:
    """Return when one of `events` is set, or after `timeout` seconds."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
