"""Shared fixtures. mDNS is always restricted to loopback (docs/architecture.md, "Processes and who dials whom")."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TENSORFLEET_MDNS_INTERFACES", "127.0.0.1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist's workers are started with COLUMNS=80 LINES=24: the CLI (and every process a test starts) would wrap
    # and cut its tables at 80 columns, as no one-process run does (tensorfleet_desktop/cli/output.py)
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)
sys.path.insert(0, str(Path(__file__).parent))

from helpers import suite_policy
from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess

SUITE_POLICY = "tensorfleet-suite-policy"


def pytest_configure(config: pytest.Config) -> None:
    """Under CI a skip fails its test unless allowed; a test not marked slow leaves no process running
    (tests/helpers/suite_policy.py, where the allow-list lives)."""
    config.pluginmanager.register(suite_policy, SUITE_POLICY)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (scripts/test: `-n 2`) each test module runs whole, in order, on one worker, so a
    module-scoped cluster starts once and tests that build on an earlier one of their module still can; the
    simulated LAN (its namespaces share one subnet and one controller address) and the GUI tests (one shared
    cluster) each run as one unit on one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleOrFolder(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            parts = path.split("/")
            return "/".join(parts[:2]) if parts[:2] in (["tests", "lan"], ["tests", "gui"]) else path

    return ModuleOrFolder(config, log)


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
