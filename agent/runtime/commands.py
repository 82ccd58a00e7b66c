"""How the agent daemon is started, and the credential variables no process it starts inherits.

No asyncio, psutil or gRPC here: `tensorfleet serve` starts its local agent with this before it imports those (the
agent's start-up then overlaps its own). runtime.process re-exports both."""

from __future__ import annotations

import sys

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def agent_command() -> list[str]:
    """How to start an agent daemon: `python -m tensorfleet_agent`, or the frozen executable's agent mode."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "--tensorfleet-agent"]
    return [sys.executable, "-m", "tensorfleet_agent"]
