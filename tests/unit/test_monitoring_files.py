"""The Grafana dashboard and the Prometheus config only name metrics the controller and agents export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from helpers.promlint import lint
from tensorfleet_agent.core.types import GpuTelemetry, Telemetry
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_desktop.controller.metrics import ControllerMetrics

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"sum", "by", "rate", "increase", "max", "histogram_quantile", "le", "agent", "gpu", "cause", "workload"}
FUNCTIONS |= {"label_values"}


def exported_text() -> str:
    """Both registries with every series present (labelled ones get a value, a GPU is attached)."""
    agent = AgentMetrics()
    gpu = GpuTelemetry(0, 50.0, 1 << 30, 8 << 30, 60.0, 120.0)
    agent.watch_hardware(lambda: Telemetry(1.0, 10.0, 1 << 30, 4 << 30, 1 << 33, (gpu,), 2, 1, 1))
    agent.completed.labels("noop").inc()
    agent.failed.labels("noop", "exit").inc()
    agent.task_duration.labels("noop", "SUCCEEDED").observe(1.0)
    controller = ControllerMetrics()
    controller.observe_metric("j1", "loss", 0.5)
    controller.observe_metric("j1", "accuracy", 0.9)
    return (generate_latest(agent.registry) + generate_latest(controller.registry)).decode()


def exported_names() -> set[str]:
    text = exported_text()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads((ROOT / "resources" / "grafana" / "tensorfleet-dashboard.json").read_text())
    exported = exported_names()
    assert {"tensorfleet_agent_gpu_utilization_ratio", "tensorfleet_agent_cpu_utilization_ratio"} <= exported
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 15
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
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


def test_every_exported_metric_passes_promtool_check_metrics_rules() -> None:
    """`worker_slots_total` was a gauge with a counter's name: promtool and Prometheus' rate() both trip on it."""
    assert lint(exported_text()) == []


def test_cpu_and_gpu_utilization_are_ratios_between_0_and_1() -> None:
    lines = dict(line.rsplit(" ", 1) for line in exported_text().splitlines() if line and not line.startswith("#"))
    assert float(lines["tensorfleet_agent_cpu_utilization_ratio"]) == pytest.approx(0.1)  # 10 %
    assert float(lines['tensorfleet_agent_gpu_utilization_ratio{gpu="0"}']) == pytest.approx(0.5)  # 50 %


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ("# HELP a_slots_total x\n# TYPE a_slots_total gauge\na_slots_total 1.0\n", "non-counter"),
        ("# HELP a_runs x\n# TYPE a_runs counter\na_runs 1.0\n", 'should have "_total"'),
        ("# TYPE a_runs_total counter\na_runs_total 1.0\n", "no help text"),
        ("# HELP a_load_percent x\n# TYPE a_load_percent gauge\na_load_percent 1.0\n", '"ratio"'),
        ("# HELP a_wait_milliseconds x\n# TYPE a_wait_milliseconds gauge\na_wait_milliseconds 1\n", '"seconds"'),
        ("# HELP a_wait_ms x\n# TYPE a_wait_ms gauge\na_wait_ms 1.0\n", "abbreviated"),
        ("# HELP a_q_count x\n# TYPE a_q_count gauge\na_q_count 1.0\n", '"_count"'),
        ("# HELP a_q_gauge x\n# TYPE a_q_gauge gauge\na_q_gauge 1.0\n", "include type"),
        ("# HELP a_qLen x\n# TYPE a_qLen gauge\na_qLen 1.0\n", "snake_case"),
        ('# HELP a_q x\n# TYPE a_q gauge\na_q{jobId="1"} 1.0\n', "label names"),
    ],
)
def test_the_lint_catches_what_promtool_rejects(page: str, problem: str) -> None:
    assert any(problem in p for p in lint(page)), lint(page)
