"""The Grafana dashboard and the Prometheus config only name metrics the controller and agents export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from tensorfleet_agent.core.types import GpuTelemetry, Telemetry
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_desktop.controller.metrics import ControllerMetrics

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"sum", "by", "rate", "increase", "max", "histogram_quantile", "le", "agent", "gpu", "cause", "workload"}


def exported_names() -> set[str]:
    agent = AgentMetrics()
    gpu = GpuTelemetry(0, 50.0, 1 << 30, 8 << 30, 60.0, 120.0)
    agent.watch_hardware(lambda: Telemetry(1.0, 10.0, 1 << 30, 4 << 30, 1 << 33, (gpu,), 2, 1, 1))
    agent.completed.labels("noop").inc()
    agent.failed.labels("noop", "exit").inc()
    agent.task_duration.labels("noop", "SUCCEEDED").observe(1.0)
    controller = ControllerMetrics()
    controller.observe_metric("j1", "loss", 0.5)
    controller.observe_metric("j1", "accuracy", 0.9)
    text = (generate_latest(agent.registry) + generate_latest(controller.registry)).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads((ROOT / "resources" / "grafana" / "tensorfleet-dashboard.json").read_text())
    exported = exported_names()
    assert "tensorfleet_agent_gpu_utilization_percent" in exported and "tensorfleet_agent_cpu_percent" in exported
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 15
    unknown = set()
    for expr in queries:
        bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
        for name in re.findall(r"[a-z_][a-z0-9_]*", bare):
            if name not in FUNCTIONS and name not in exported:
                unknown.add(name)
    assert not unknown, f"the dashboard queries metrics nobody exports: {sorted(unknown)}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_config_reads_the_controllers_targets_file() -> None:
    config = yaml.safe_load((ROOT / "packaging" / "monitoring" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["file_sd_configs"][0]["files"][0].endswith("prometheus/targets.json")
