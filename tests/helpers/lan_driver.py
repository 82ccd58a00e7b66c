"""Runs SDK calls for a test from inside a namespace of the simulated LAN.

The test process lives outside the LAN, so it cannot reach the controller's address itself. This
script runs in a host namespace of the LAN and answers one JSON request per line on stdin
({"method", "args", "kwargs"}) with one JSON line on stdout ({"ok": value} or {"error", "type"}).
One long-lived process per cluster: a CLI process per call would cost a second of start-up each.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from tensorfleet_desktop.client import Client


def _arg(value: Any) -> Any:
    """Paths travel as {"__path__": text} (the SDK's upload and download take Path objects)."""
    if isinstance(value, dict) and set(value) == {"__path__"}:
        return Path(value["__path__"])
    return value


def main(address: str) -> None:
    client = Client(address)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            value = getattr(client, request["method"])(
                *map(_arg, request["args"]), **{k: _arg(v) for k, v in request["kwargs"].items()}
            )
            if inspect.isgenerator(value):
                value = list(value)
            answer = {"ok": value}
        except Exception as exc:  # reported to the test, which raises it there
            answer = {"error": str(exc), "type": type(exc).__name__}
        sys.stdout.write(json.dumps(answer, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
