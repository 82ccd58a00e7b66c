"""Prometheus end to end: the controller's file_sd targets list it and its agents, and each target serves
the metrics the Grafana dashboard reads."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess
from helpers.waiting import wait_until

pytestmark = pytest.mark.slow


def scrape(target: str) -> str:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_targets_file_lists_the_controller_and_agents_serving_metrics(
    tmp_path: Path, agent_factory: type[AgentProcess], controller_factory: type[ControllerProcess]
) -> None:
    agent = agent_factory(tmp_path / "agent", name="metrics-agent", extra_args=["--metrics-port", "0"]).start()
    agent_factory(tmp_path / "quiet", name="quiet-agent").start()  # no /metrics: not a target
    controller = controller_factory(tmp_path / "controller", extra_args=["--metrics-port", "0"]).start()
    path = tmp_path / "controller" / "prometheus" / "targets.json"

    def groups() -> list[dict[str, Any]]:
        return json.loads(path.read_text()) if path.exists() else []

    wait_until(lambda: len(groups()) == 2, 30, "controller + 1 agent in the targets file")
    by_job = {g["labels"]["job"]: g for g in groups()}
    assert by_job["tensorfleet-agent"]["labels"]["agent"] == "metrics-agent"
    assert by_job["tensorfleet-agent"]["targets"] == [f"127.0.0.1:{agent.info['metrics_port']}"]
    assert by_job["tensorfleet-controller"]["targets"] == [f"127.0.0.1:{controller.info['metrics_port']}"]
    agent_text = scrape(by_job["tensorfleet-agent"]["targets"][0])
    for name in ("tensorfleet_agent_cpu_percent", "tensorfleet_agent_memory_used_bytes", "worker_slots_total"):
        assert f"\n{name} " in agent_text, name
    assert "\ntensorfleet_active_workers 2.0" in scrape(by_job["tensorfleet-controller"]["targets"][0])
    agent.kill()  # a lost agent leaves the targets file
    wait_until(lambda: len(groups()) == 1, 30, "the lost agent to leave the targets file")
