"""A controller with two agents on loopback, found over mDNS: what most end-to-end tests start from.

`cluster` is a fresh one per test, for tests that kill, restart or add processes, or that count everything the
controller holds (jobs, models, datasets). `shared_cluster` is one per module, for tests that only submit jobs of
their own and look at those (each job has its own id): the module pays for one cluster start, not one per test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.servers import start_secantus
from helpers.waiting import wait_until
from tensorfleet_desktop.client import Client

Cluster = tuple[ControllerProcess, list[AgentProcess]]


def _cluster(root: Path, agent_type: type[AgentProcess], controller_type: type[ControllerProcess]) -> Cluster:
    agents = [agent_type(root / f"agent{i}", name=f"agent-{i}", cpu_slots=1) for i in range(2)]
    # /metrics on a free port: tests count scheduler passes there (ControllerProcess.after_scheduler_passes)
    return controller_type(root / "controller", extra_args=["--metrics-port", "0"]), agents


def _start(cluster: Cluster) -> Cluster:
    controller, agents = cluster
    processes: list[AgentProcess | ControllerProcess] = [*agents, controller]
    for process in processes:  # start together, then wait: the controller finds them as they come
        process.spawn()
    for agent in agents:
        agent.wait_ready()
    controller.wait_ready()
    with Client(controller.address) as client:
        wait_until(lambda: sum(a["state"] == "ONLINE" for a in client.agents()) == 2, 20, "2 agents over mDNS")
    return cluster


@pytest.fixture
def cluster(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> Iterator[Cluster]:
    yield _start(_cluster(tmp_path, agent_factory, controller_factory))


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module's tests that leave it as they found it: both agents ONLINE and idle once their
    jobs have ended. A test that kills, drains or adds a process, or lists everything, takes `cluster`. Its
    agents pair with its own token, not helpers.agents.CLUSTER_TOKEN."""
    controller, agents = _cluster(tmp_path_factory.mktemp("shared-cluster"), AgentProcess, ControllerProcess)
    # its own cluster token: the module's fresh `cluster`s run beside it on the same loopback mDNS, and each side
    # refuses the other's agents instead of taking them in
    token = {"TENSORFLEET_CLUSTER_TOKEN": f"shared-cluster-{secrets.token_hex(8)}"}
    controller.env = token
    for agent in agents:
        agent.env = token
    try:
        yield _start((controller, agents))
    finally:  # as the function-scoped factories do: the controller first, then the agents, draining at once
        controller.stop()
        for agent in agents:
            agent.signal_stop()
        for agent in agents:
            agent.stop()


@pytest.fixture(scope="module")
def http_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`shared_cluster` with the HTTP API on a free port (helpers.http_api.HttpApi.of(controller) talks to it)."""
    controller, agents = _cluster(tmp_path_factory.mktemp("http-cluster"), AgentProcess, ControllerProcess)
    controller.extra_args += ["--http-port", "0"]
    token = {"TENSORFLEET_CLUSTER_TOKEN": f"http-cluster-{secrets.token_hex(8)}"}
    controller.env = token
    for agent in agents:
        agent.env = token
    try:
        yield _start((controller, agents))
    finally:
        controller.stop()
        for agent in agents:
            agent.signal_stop()
        for agent in agents:
            agent.stop()


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB-protocol server for the store's tests: $TENSORFLEET_TEST_MONGODB_URI, else a SecantusDB process."""
    real = os.environ.get("TENSORFLEET_TEST_MONGODB_URI")
    if real:
        yield real.rstrip("/")
        return
    server, uri = start_secantus(tmp_path_factory.mktemp("secantus"))
    yield uri
    server.stop()
