"""Prometheus metrics of the controller (the seed's names); per-job series go when the job ends."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.submissions = Counter("tensorfleet_job_submissions", "Jobs submitted", registry=self.registry)
        self.active_jobs = Gauge("tensorfleet_active_jobs", "Jobs queued or running", registry=self.registry)
        self.active_workers = Gauge("tensorfleet_active_workers", "Agents online", registry=self.registry)
        self.loss = Gauge("tensorfleet_training_loss", "Last reported loss", ["job_id"], registry=self.registry)
        self.accuracy = Gauge(
            "tensorfleet_training_accuracy", "Last reported accuracy", ["job_id"], registry=self.registry
        )
        self.preemptions = Counter(
            "tensorfleet_preemptions",
            "Tasks the scheduler asked to checkpoint and stop for a job of higher priority",
            registry=self.registry,
        )
        self.schedule_pass = Histogram(
            "tensorfleet_schedule_pass_seconds",
            "One scheduler pass: every queued task against every agent, and the dispatches it decides",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

    def observe_metric(self, job_id: str, name: str, value: float) -> None:
        if name in ("loss", "train_loss"):
            self.loss.labels(job_id).set(value)
        elif name in ("accuracy", "test_accuracy", "val_accuracy"):
            self.accuracy.labels(job_id).set(value)

    def job_ended(self, job_id: str) -> None:
        for gauge in (self.loss, self.accuracy):
            with contextlib.suppress(KeyError):
                gauge.remove(job_id)

    def serve(self, port: int, host: str) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])
