"""Owner input from an X11 display: the XScreenSaver extension's idle time (python-xlib: errors are exceptions,
never Xlib's exit() on a lost display)."""

from __future__ import annotations

import logging
import time
from typing import Any

from tensorfleet_agent.desk.signals import Reading

log = logging.getLogger(__name__)
RETRY_SECONDS = 10.0  # a display that cannot be opened is tried again this often


class X11Idle:
    name = "x11"
    period = 0.1

    def __init__(self, display: str) -> None:
        self.display = display
        self._conn: Any = None
        self._root: Any = None
        self._next_try = 0.0
        self._warned = False

    def _connect(self) -> bool:
        if self._conn is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        self._next_try = time.monotonic() + RETRY_SECONDS
        try:
            from Xlib import display as xdisplay

            conn = xdisplay.Display(self.display)
            if not conn.has_extension("MIT-SCREEN-SAVER"):
                conn.close()
                raise RuntimeError("the display has no MIT-SCREEN-SAVER extension")
        except ImportError:
            self._warn("python-xlib is not installed (pip install 'tensorfleet[desk]')")
            return False
        except Exception as exc:
            self._warn(f"{type(exc).__name__}: {exc}")
            return False
        self._conn, self._root = conn, conn.screen().root
        log.info("desk mode: reading input idle time from X display %s", self.display)
        self._warned = False
        return True

    def _warn(self, why: str) -> None:
        if not self._warned:
            log.warning("desk mode: cannot read X display %s: %s", self.display, why)
            self._warned = True

    def read(self) -> Reading | None:
        if not self._connect():
            return None
        try:
            idle_ms = int(self._root.screensaver_query_info().idle)
        except Exception as exc:  # the display went away: try again later
            self._warn(f"{type(exc).__name__}: {exc}")
            self.close()
            return None
        return Reading(idle_seconds=idle_ms / 1000.0)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                log.debug("closing the X display: %s", exc)
