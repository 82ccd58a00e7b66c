"""GUI tests run offscreen: no display is needed (and none exists in CI).

`gui_cluster` (a controller and two one-slot agents on loopback) is shared by every GUI test module: start it once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.processes import start_together
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Qt settles on one settings folder per process, the first time QSettings is used: point it away from the user's
# ~/.config before any test opens a window (per-module monkeypatching would come too late).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="tensorfleet-gui-tests-xdg-")


@pytest.fixture(scope="session")
def gui_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControllerProcess, list[AgentProcess]]]:
    root = tmp_path_factory.mktemp("gui-cluster")
    agents = [AgentProcess(root / f"agent{i}", name=f"gui-agent-{i}", cpu_slots=1) for i in range(2)]
    controller = ControllerProcess(root / "controller")
    try:
        start_together(*agents, controller)  # the controller finds the agents as they come
        with Client(controller.address) as client:
            wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 30, "2 agents over mDNS")
        yield controller, agents
    finally:
        controller.stop()
        for agent in agents:  # all drain at once
            agent.signal_stop()
        for agent in agents:
            agent.stop()
