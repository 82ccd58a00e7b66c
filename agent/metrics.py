"""Prometheus metrics of one agent (served on --metrics-port).

Names follow the Prometheus conventions that `promtool check metrics` enforces: counters end in _total
(prometheus_client appends it), gauges never do, values are in base units named as a suffix (_bytes, _seconds,
_celsius, and 0-1 _ratio rather than percent)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tensorfleet_agent.core.types import Telemetry


class HardwareCollector(Collector):
    """CPU, memory, disk and per-GPU readings, sampled when Prometheus scrapes (never stale)."""

    def __init__(self, sample: Callable[[], Telemetry]) -> None:
        self.sample = sample

    def collect(self) -> Iterator[GaugeMetricFamily]:
        t = self.sample()
        yield GaugeMetricFamily(
            "tensorfleet_agent_cpu_utilization_ratio", "CPU utilization of the machine (0-1)", value=t.cpu_percent / 100
        )
        yield GaugeMetricFamily("tensorfleet_agent_memory_used_bytes", "Memory in use", value=t.memory_used_bytes)
        yield GaugeMetricFamily("tensorfleet_agent_memory_total_bytes", "Memory installed", value=t.memory_total_bytes)
        yield GaugeMetricFamily(
            "tensorfleet_agent_disk_free_bytes", "Free disk in the data dir", value=t.disk_free_bytes
        )
        per_gpu = {  # metric suffix: (help, telemetry field, scale to the base unit)
            "utilization_ratio": ("GPU utilization (0-1)", "utilization_percent", 0.01),
            "memory_used_bytes": ("GPU memory in use", "memory_used_bytes", 1.0),
            "memory_total_bytes": ("GPU memory", "memory_total_bytes", 1.0),
            "temperature_celsius": ("GPU temperature", "temperature_celsius", 1.0),
            "power_watts": ("GPU power draw", "power_watts", 1.0),
        }
        for name, (text, field, scale) in per_gpu.items():
            family = GaugeMetricFamily(f"tensorfleet_agent_gpu_{name}", text, labels=["gpu"])
            for gpu in t.gpus:
                family.add_metric([str(gpu.index)], float(getattr(gpu, field)) * scale)
            yield family


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.task_duration = Histogram(
            "worker_task_duration_seconds",
            "Wall time of finished tasks",
            ["workload", "status"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, float("inf")),
        )
        self.completed = Counter(
            "worker_tasks_completed", "Tasks that finished successfully", ["workload"], registry=self.registry
        )
        self.failed = Counter(
            "worker_tasks_failed",
            "Tasks that failed or were cancelled",
            ["workload", "cause"],
            registry=self.registry,
        )
        self.slots_total = Gauge("worker_slots", "Slots on this agent", registry=self.registry)
        self.slots_in_use = Gauge("worker_slots_in_use", "Slots held by running tasks", registry=self.registry)
        self.tasks_running = Gauge("worker_tasks_running", "Tasks running now", registry=self.registry)
        self.events_streamed = Counter("worker_events_streamed", "Task events sent to watchers", registry=self.registry)

    def watch_hardware(self, sample: Callable[[], Telemetry]) -> None:
        self.registry.register(HardwareCollector(sample))

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the /metrics HTTP endpoint in a background thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])
