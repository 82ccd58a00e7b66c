"""What the task SDK's messages mean to the runner (issue 19): each JSON line a process of the project's command
sent on its connection (project_socket.py), checked and acted on.

- metrics / progress / log: validated and sent on as tensorfleet_agent.task sends them (the worker's channel);
- artifact_file / checkpoint_file / register_model: carried out (project_requests.py) and answered;
- hello {"pid", "signals"}: a process connected; with signals true it has the SDK's SIGUSR1 handler (a pause is
  forwarded to it, and again now when one was asked before it said hello); stopped {"reason"}: the task ends as
  stopped, not failed.

A malformed line from user code is said in a stderr log line (the first 20), never fatal.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from tensorfleet_agent import task as task_api
from tensorfleet_agent.workloads.project_requests import FILE_REQUESTS, FileRequests, Refused

MAX_BAD_LINES_SHOWN = 20


def note(text: str) -> None:
    """A line of the runner's own in the task's logs (stderr)."""
    print(f"tensorfleet: {text}", file=sys.stderr, flush=True)


class Relay:
    """One task's SDK messages: `on_line` is project_socket.SdkServer's handler."""

    def __init__(self, requests: FileRequests, on_hello: Callable[[], None]) -> None:
        self.requests = requests
        self.on_hello = on_hello
        self.stop_reason: str | None = None
        self.sdk_pids: set[int] = set()
        self.bad_lines = 0

    def on_line(self, line: bytes) -> dict[str, Any] | None:
        """Act on one line; the reply to send back when it was a request with an id."""
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            self._bad(line, "not JSON")
            return None
        if not isinstance(message, dict) or not isinstance(message.get("t"), str):
            self._bad(line, "not an object with a 't'")
            return None
        kind = message["t"]
        try:
            if kind in FILE_REQUESTS:
                return self._file_request(kind, message)
            if kind == "metrics":
                self._metrics(message)
            elif kind == "progress":
                fraction = _number(message.get("fraction"), "fraction")
                task_api._send({"t": "progress", "fraction": min(1.0, max(0.0, fraction))})
            elif kind == "log":
                stream = "stderr" if message.get("stream") == "stderr" else "stdout"
                task_api._send({"t": "log", "stream": stream, "line": str(message.get("line", ""))[:65536]})
            elif kind == "stopped":
                self.stop_reason = str(message.get("reason") or "stopped on request")[:1000]
            elif kind == "hello":
                pid = message.get("pid")
                takes_signal = message.get("signals", True) is True
                if takes_signal and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
                    self.sdk_pids.add(pid)
                self.on_hello()
            else:
                self._bad(line, f"unknown type {kind!r}")
        except (ValueError, TypeError, KeyError) as exc:
            self._bad(line, str(exc))
        return None

    def _bad(self, line: bytes, why: str) -> None:
        self.bad_lines += 1
        if self.bad_lines <= MAX_BAD_LINES_SHOWN:
            shown = line[:200].decode("utf-8", "replace")
            note(f"ignored a malformed message from the task SDK ({why}): {shown}")

    def _metrics(self, message: dict[str, Any]) -> None:
        step = message.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        values = message.get("values")
        if not isinstance(values, dict) or not values:
            raise ValueError("values must be an object of metric names to numbers")
        clean = {}
        for name, value in values.items():
            number = _number(value, f"metric {name!r}")
            if not name or len(name) > 256:
                raise ValueError(f"metric name {name[:50]!r} must be 1-256 characters")
            clean[name] = number
        wall = message.get("wall_time")
        wall_time = float(wall) if isinstance(wall, int | float) and math.isfinite(wall) else time.time()
        task_api._send({"t": "metrics", "step": step, "values": clean, "wall_time": wall_time})

    def _file_request(self, kind: str, message: dict[str, Any]) -> dict[str, Any] | None:
        ident = message.get("id")
        try:
            reply = self.requests.answer(kind, message)
        except Refused as exc:
            note(f"{kind} refused: {exc}")
            reply = {"ok": False, "type": exc.kind, "error": str(exc)}
        except OSError as exc:
            note(f"{kind} failed: {exc}")
            reply = {"ok": False, "type": "RuntimeError", "error": f"the agent could not store the file: {exc}"}
        return None if ident is None else {"t": "reply", "id": ident, **reply}


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{what} is NaN")
    return number
