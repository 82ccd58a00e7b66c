"""The worker -> agent event pipe: one JSON object per line.

Lines are written whole under a lock, so threads inside a task may report
concurrently without interleaving. A sweep's bundled trials hold their lines
(`held`) and write them together: one pipe write, one wake-up of the agent per
trial instead of one per line, which on a busy box is most of a small trial's cost. A line on stderr
(a warning, an error) goes at once, with those held before it: a trial that then dies (a segfault, the memory
limit's SIGKILL) loses at most its last stdout lines, metrics and files of the hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

#: Environment variable naming the fd a fresh (script) process reports on.
EVENTS_FD_ENV = "TENSORFLEET_EVENTS_FD"
_HOLD_BYTES = 1 << 16  # held lines are written once they reach this size, whatever their age


class EventChannel:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._held: list[bytes] | None = None  # lines waiting while held
        self._held_since = 0.0
        self._held_bytes = 0
        self._hold_for = 0.0

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":"), allow_nan=True) + "\n").encode()
        with self._lock:
            if self._held is None:
                self._write(data)
                return
            if not self._held:
                self._held_since = time.monotonic()
            self._held.append(data)
            self._held_bytes += len(data)
            if (
                self._held_bytes >= _HOLD_BYTES
                or time.monotonic() - self._held_since >= self._hold_for  # a long trial's are not held longer
                or message.get("stream") == "stderr"  # what a failure says goes at once
            ):
                self._flush()

    @contextlib.contextmanager
    def held(self, seconds: float) -> Iterator[None]:
        """Hold lines sent meanwhile and write them together at the end, or as soon as the oldest has waited
        `seconds` at the time of a send (a line followed by a long silence waits for the next one, or the end)."""
        with self._lock:
            self._held, self._held_bytes, self._hold_for = [], 0, seconds
        try:
            yield
        finally:
            with self._lock:
                self._flush()
                self._held = None

    def _flush(self) -> None:
        if self._held:
            self._write(b"".join(self._held))
            self._held.clear()
            self._held_bytes = 0

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
