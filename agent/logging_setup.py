"""The one logging format of TensorFleet processes (stderr; stdout stays for data)."""

from __future__ import annotations

import logging
import sys

from tensorfleet_agent.security.secrets import RedactingFilter

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("zeroconf", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
