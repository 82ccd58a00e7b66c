"""Shared fixtures. mDNS is always restricted to loopback (docs/architecture.md, "Processes and who dials whom")."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TENSORFLEET_MDNS_INTERFACES", "127.0.0.1")
sys.path.insert(0, str(Path(__file__).parent))

from helpers import suite_policy
from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess

SUITE_POLICY = "tensorfleet-suite-policy"


def pytest_configure(config: pytest.Config) -> None:
    """Under CI a skip fails its test unless allowed; a test not marked slow leaves no process running
    (tests/helpers/suite_policy.py, where the allow-list lives)."""
    config.pluginmanager.register(suite_policy, SUITE_POLICY)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test: `-n 2 --dist loadgroup`) a module's tests stay on one worker, so a
    module-scoped cluster starts once, not once per worker; the simulated LAN's namespaces share one subnet and the
    GUI tests share one cluster, so each of those folders runs on a single worker too."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        group = folder if folder in ("lan", "gui") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def _stopping() -> Iterator[list[AgentProcess | ControllerProcess]]:
    """The processes a test's factories started, already asked to stop (SIGTERM): waited for (then killed if
    need be) here, after both factories' teardowns, so that a test's controllers and agents all shut down side by
    side and its teardown waits for the slowest of them, not for the controllers and then the agents."""
    stopping: list[AgentProcess | ControllerProcess] = []
    yield stopping
    for process in stopping:
        process.stop()


@pytest.fixture
def agent_factory(tmp_path: Path, _stopping: list[AgentProcess | ControllerProcess]) -> Iterator[type[AgentProcess]]:
    started: list[AgentProcess] = []

    class Factory(AgentProcess):
        def spawn(self) -> None:
            if self not in started:
                started.append(self)
            super().spawn()

    yield Factory
    for agent in started:
        agent.signal_stop()
    _stopping.extend(started)


@pytest.fixture
def agent(tmp_path: Path, agent_factory: type[AgentProcess]) -> AgentProcess:
    return agent_factory(tmp_path / "agent").start()


@pytest.fixture
def controller_factory(
    tmp_path: Path, _stopping: list[AgentProcess | ControllerProcess]
) -> Iterator[type[ControllerProcess]]:
    started: list[ControllerProcess] = []

    class Factory(ControllerProcess):
        def spawn(self) -> None:
            if self not in started:
                started.append(self)
            super().spawn()

    yield Factory
    for controller in started:
        controller.signal_stop()
    _stopping.extend(started)
