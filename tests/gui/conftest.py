"""GUI tests run offscreen: no display is needed (and none exists in CI).

`gui_cluster` (a controller and two one-slot agents on loopback) is shared by every GUI test module: start it once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.processes import start_together
from helpers.servers import free_port
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

if TYPE_CHECKING:  # the fixture imports Qt only when a test asks for it
    from tensorfleet_desktop.ui.bridge import Bridge

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Qt settles on one settings folder per process, the first time QSettings is used: point it away from the user's
# ~/.config before any test opens a window (per-module monkeypatching would come too late).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="tensorfleet-gui-tests-xdg-")


Cluster = tuple[ControllerProcess, list[AgentProcess]]
_cluster: Cluster | None = None


@pytest.fixture(scope="session")
def gui_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """Started by the first GUI test that asks, stopped once the run leaves tests/gui (see the hook below), so
    run the GUI tests together (pytest keeps a directory's tests together)."""
    global _cluster
    if _cluster is None:
        root = tmp_path_factory.mktemp("gui-cluster")
        agents = [AgentProcess(root / f"agent{i}", name=f"gui-agent-{i}", cpu_slots=1) for i in range(2)]
        controller = ControllerProcess(root / "controller")
        _cluster = (controller, agents)
        start_together(*agents, controller)  # the controller finds the agents as they come
        with Client(controller.address) as client:
            wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 30, "2 agents over mDNS")
    return _cluster


def _stop_cluster() -> None:
    global _cluster
    if _cluster is None:
        return
    controller, agents = _cluster
    _cluster = None
    controller.stop()
    for agent in agents:  # all drain at once
        agent.signal_stop()
    for agent in agents:
        agent.stop()


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The last GUI test stops the shared cluster: its agents, still advertised over loopback mDNS, would otherwise
    show up in every later test's controller."""
    here = Path(__file__).parent
    if nextitem is None or here not in Path(nextitem.path).parents:
        _stop_cluster()


def pytest_sessionfinish() -> None:
    _stop_cluster()


@pytest.fixture
def bridge(qapp: Any) -> Iterator[Bridge]:
    """A window's bridge pointed where no controller answers: for widgets that need only its worker thread."""
    from tensorfleet_desktop.ui.bridge import Bridge

    b = Bridge(f"127.0.0.1:{free_port()}", autostart=False)
    b.start()
    yield b
    b.stop()
