"""Prometheus metrics of one agent (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


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
        self.slots_total = Gauge("worker_slots_total", "Slots on this agent", registry=self.registry)
        self.slots_in_use = Gauge("worker_slots_in_use", "Slots held by running tasks", registry=self.registry)
        self.tasks_running = Gauge("worker_tasks_running", "Tasks running now", registry=self.registry)
        self.events_streamed = Counter("worker_events_streamed", "Task events sent to watchers", registry=self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the /metrics HTTP endpoint in a background thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])
