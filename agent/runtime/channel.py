"""The worker -> agent event pipe: one JSON object per line.

Lines are written whole under a lock, so threads inside a task may report
concurrently without interleaving.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

#: Environment variable naming the fd a fresh (script) process reports on.
EVENTS_FD_ENV = "TENSORFLEET_EVENTS_FD"


class EventChannel:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":"), allow_nan=True) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
