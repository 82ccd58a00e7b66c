"""A controller with two agents on loopback, found over mDNS: what most end-to-end tests start from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client


@pytest.fixture
def cluster(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> Iterator[tuple[ControllerProcess, list[AgentProcess]]]:
    agents = [agent_factory(tmp_path / f"agent{i}", name=f"agent-{i}", cpu_slots=1) for i in range(2)]
    # /metrics on a free port: tests count scheduler passes there (ControllerProcess.after_scheduler_passes)
    controller = controller_factory(tmp_path / "controller", extra_args=["--metrics-port", "0"])
    for process in (*agents, controller):  # start together, then wait: the controller finds them as they come
        process.spawn()
    for agent in agents:
        agent.wait_ready()
    controller.wait_ready()
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 20, "2 agents over mDNS")
    yield controller, agents
