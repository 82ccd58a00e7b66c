"""Prometheus end to end: the controller's file_sd targets list it and its agents, and each target serves
the metrics the Grafana dashboard reads, named as promtool wants; the standard gRPC health and reflection
services that grpc_health_probe and grpcurl use answer on the controller and its agents."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json, tensorfleet
from helpers.grpc_probe import health_changes, health_status, reflected_methods, reflected_services
from helpers.processes import start_together
from helpers.promlint import lint
from helpers.waiting import wait_until
from tensorfleet_agent.identity import node_id_of_cert
from tensorfleet_agent.rpc.client import create_channel, fetch_certificate, pinned_credentials
from tensorfleet_desktop.client import Client, channel_security

pytestmark = pytest.mark.slow


def scrape(target: str) -> str:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_targets_file_lists_the_controller_and_agents_serving_metrics(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> None:
    agent, _quiet, controller = start_together(
        agent_factory(tmp_path / "agent", name="metrics-agent", extra_args=["--metrics-port", "0"]),
        agent_factory(tmp_path / "quiet", name="quiet-agent"),  # no /metrics: not a target
        controller_factory(tmp_path / "controller", extra_args=["--metrics-port", "0"]),
    )
    path = tmp_path / "controller" / "prometheus" / "targets.json"

    def groups() -> list[dict[str, Any]]:
        return json.loads(path.read_text()) if path.exists() else []

    wait_until(lambda: len(groups()) == 2, 30, "controller + 1 agent in the targets file")
    by_job = {g["labels"]["job"]: g for g in groups()}
    assert by_job["tensorfleet-agent"]["labels"]["agent"] == "metrics-agent"
    assert by_job["tensorfleet-agent"]["targets"] == [f"127.0.0.1:{agent.info['metrics_port']}"]
    assert by_job["tensorfleet-controller"]["targets"] == [f"127.0.0.1:{controller.info['metrics_port']}"]
    agent_text = scrape(by_job["tensorfleet-agent"]["targets"][0])
    for name in ("tensorfleet_agent_cpu_utilization_ratio", "tensorfleet_agent_memory_used_bytes", "worker_slots"):
        assert f"\n{name} " in agent_text, name
    controller_page = by_job["tensorfleet-controller"]["targets"][0]  # both agents, once the quiet one is online
    wait_until(lambda: "\ntensorfleet_active_workers 2.0" in scrape(controller_page), 30, "2 agents in the gauge")
    agent.kill()  # a lost agent leaves the targets file
    wait_until(lambda: len(groups()) == 1, 30, "the lost agent to leave the targets file")


async def test_serve_pages_pass_promtool_rules_and_grpc_health_and_reflection_answer(
    tmp_path: Path, controller_factory: type[ControllerProcess]
) -> None:
    """One `serve` with its local agent: both /metrics pages (the agent's through --local-agent-metrics-port),
    on loopback even when the gRPC API listens elsewhere; health without a token, reflection with it."""
    host = "127.0.0.2"  # loopback too, but not where /metrics belongs unless --metrics-host says so
    controller = controller_factory(
        tmp_path / "ctl",
        local_agent=True,
        extra_args=["--no-mdns", "--host", host, "--metrics-port", "0", "--local-agent-metrics-port", "0"],
    ).start()
    address = f"{host}:{controller.port}"
    with Client(address) as client:
        wait_until(lambda: [a for a in client.agents() if a["state"] == "ONLINE"], 30, "the local agent online")
    local = cli_json(tensorfleet("--controller", address, "agents", "--json"))[0]
    assert local["source"] == "local" and local["metrics_port"] > 0
    metrics_port = controller.info["metrics_port"]
    pages = {"agent": scrape(f"127.0.0.1:{local['metrics_port']}"), "controller": scrape(f"127.0.0.1:{metrics_port}")}
    assert "\nworker_slots " in pages["agent"] and "\ntensorfleet_active_workers 1.0" in pages["controller"]
    assert {name: lint(text) for name, text in pages.items()} == {"agent": [], "controller": []}
    with pytest.raises(urllib.error.URLError):
        scrape(f"{host}:{metrics_port}")  # not on the API's address

    credentials, target, metadata = channel_security(address)
    channel = create_channel(address, credentials, target)
    try:
        assert await health_status(channel) == "SERVING"  # the one call that needs no token
        assert await health_status(channel, "tensorfleet.v1.ControllerService", metadata) == "SERVING"
        services = await reflected_services(channel, metadata)
        assert {"tensorfleet.v1.ControllerService", "grpc.health.v1.Health"} <= services
        assert "SubmitJob" in await reflected_methods(channel, "tensorfleet.v1.ControllerService", metadata)
    finally:
        await channel.close(None)

    cert = await fetch_certificate(local["address"])  # the local agent is paired with the controller only
    channel = create_channel(local["address"], pinned_credentials(cert), node_id_of_cert(cert)[0])
    try:
        assert await health_status(channel) == "SERVING"  # no session: health and reflection are public
        assert await health_status(channel, "tensorfleet.v1.AgentService") == "SERVING"
        assert "tensorfleet.v1.AgentService" in await reflected_services(channel)
        assert "RunTask" in await reflected_methods(channel, "tensorfleet.v1.AgentService")
    finally:
        await channel.close(None)

    channel = create_channel(address, credentials, target)  # a load balancer watching the controller
    try:
        changes = health_changes(channel)
        assert await anext(changes) == "SERVING"
        assert controller.proc is not None
        controller.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(anext(changes), 30) == "NOT_SERVING"  # told before the port closes
    finally:
        await channel.close(None)
