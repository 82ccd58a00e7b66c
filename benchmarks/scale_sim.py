#!/usr/bin/env python3
"""Scale simulation: 1,000 queued jobs, 50 simulated agents speaking the real AgentService, as JSON.

A real `tensorfleet serve` controller (no local agent) gets --jobs `sleep` jobs queued first, then
--agents simulated agents (benchmarks/fake_agents.py: real daemons, real gRPC + TLS + pairing, tasks
simulated without worker processes) are added by address. Reported:
- submit rate of the queue, makespan and completed jobs/s against the ideal (jobs x seconds / slots);
- scheduling decision latency as the agents see it: from a slot freeing (task finished) to the next
  task arriving on that agent, p50/p99 (event stream -> controller -> scheduler pass -> RunTask);
- the controller's own scheduler pass durations (its `tensorfleet_schedule_pass_seconds` histogram);
- controller CPU (average percent of one core, and seconds) and peak RSS/PSS.
mDNS stays on 127.0.0.1 (the simulated agents do not advertise).

With --profile DIR (py-spy), the controller is sampled while the queue drains.

Usage: python benchmarks/scale_sim.py [--jobs 1000] [--agents 50] [--seconds 0.5] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

import psutil  # noqa: E402
from profiling import Profiler  # noqa: E402

from helpers.agents import CLUSTER_TOKEN  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from helpers.servers import free_port  # noqa: E402
from tensorfleet_desktop.client import Client  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Sampler(threading.Thread):
    """CPU seconds and peak memory of one process, sampled every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak_rss = self.peak_pss = 0
        self.stop_event = threading.Event()
        self.cpu0 = sum(self.proc.cpu_times()[:2])
        self.t0 = time.monotonic()
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            info = self.proc.memory_full_info()
            self.peak_rss = max(self.peak_rss, info.rss)
            self.peak_pss = max(self.peak_pss, getattr(info, "pss", info.rss))

    def finish(self) -> dict[str, float]:
        self.cpu_s = sum(self.proc.cpu_times()[:2]) - self.cpu0
        self.wall_s = time.monotonic() - self.t0
        self.stop_event.set()
        self.join()
        return {
            "cpu_seconds": round(self.cpu_s, 2),
            "cpu_percent_of_one_core": round(100 * self.cpu_s / self.wall_s, 1),
            "peak_rss_mib": round(self.peak_rss / 2**20, 1),
            "peak_pss_mib": round(self.peak_pss / 2**20, 1),
        }


def histogram(metrics_url: str, name: str) -> dict[str, Any]:
    """Quantiles of a Prometheus histogram from its cumulative buckets (upper bounds)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count = float(line.rsplit(" ", 1)[1])

    def quantile(q: float) -> float:
        for bound, cumulative in buckets:
            if cumulative >= q * count:
                return bound
        return float("inf")

    return {
        "passes": int(count),
        "mean_ms": round(1000 * total / count, 3) if count else None,
        "p50_ms_at_most": quantile(0.5) * 1000,
        "p99_ms_at_most": quantile(0.99) * 1000,
    }


def run(jobs: int, agents: int, seconds: float, slots: int, profile: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tensorfleet-scale-") as tmp:
        root = Path(tmp)
        metrics_port = free_port()
        controller = ControllerProcess(root / "controller", extra_args=["--metrics-port", str(metrics_port)]).start()
        sim_ready, sim_report = root / "sim.ready", root / "sim.report"
        sim_log = (root / "sim.log").open("wb")
        argv = [sys.executable, str(ROOT / "benchmarks" / "fake_agents.py"), "--count", str(agents)]
        argv += ["--slots", str(slots), "--dir", str(root / "sim"), "--ready", str(sim_ready)]
        sim = subprocess.Popen(
            [*argv, "--report", str(sim_report)],
            stdout=sim_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN},
        )
        try:
            t0 = time.monotonic()
            while not sim_ready.exists():
                if sim.poll() is not None:
                    raise RuntimeError((root / "sim.log").read_text()[-3000:])
                time.sleep(0.1)
            agents_start_s = time.monotonic() - t0
            addresses = json.loads(sim_ready.read_text())["addresses"]
            assert controller.proc is not None
            sampler = Sampler(controller.proc.pid)
            sampler.start()
            with Client(controller.address, timeout=60) as client:
                spec = {"algorithm": "sleep", "hyperparameters": {"seconds": seconds}, "max_retries": 0}
                t0 = time.monotonic()
                for _ in range(jobs):
                    client.submit(spec)
                submit_s = time.monotonic() - t0
                with Profiler(profile, {"controller": controller.proc.pid}) as profiler:
                    t0 = time.monotonic()
                    for address in addresses:
                        client.add_agent(address)
                    while sum(a["state"] == "ONLINE" and a["paired"] for a in client.agents()) < agents:
                        time.sleep(0.1)
                    online_s = time.monotonic() - t0
                    while client.jobs(("QUEUED", "RUNNING"), limit=1):
                        time.sleep(0.25)
                    makespan = time.monotonic() - t0
                states: dict[str, int] = {}
                for job in client.jobs(limit=jobs + 10):
                    states[job["state"]] = states.get(job["state"], 0) + 1
            controller_figures = sampler.finish()
            passes = histogram(f"http://127.0.0.1:{metrics_port}/metrics", "tensorfleet_schedule_pass_seconds")
            sim.send_signal(signal.SIGTERM)
            sim.wait(60)
            report = json.loads(sim_report.read_text())
        finally:
            if sim.poll() is None:
                sim.kill()
            controller.stop()
    gaps = []
    for times in report.values():
        accepted, finished = sorted(times["accepted"]), sorted(times["finished"])
        for start in accepted[1:]:  # the first task of an agent waited for the agent, not for a slot
            freed = [f for f in finished if f <= start]
            if freed:
                gaps.append((start - freed[-1]) * 1000)
    ideal = jobs * seconds / (agents * slots)
    return {
        "jobs": jobs,
        "agents": agents,
        "slots_per_agent": slots,
        "task_seconds": seconds,
        "states": states,
        "simulated_agents_ready_s": round(agents_start_s, 2),
        "submit_jobs_per_s": round(jobs / submit_s, 1),
        "agents_added_to_online_s": round(online_s, 2),
        "makespan_s": round(makespan, 2),
        "ideal_makespan_s": round(ideal, 2),
        "completed_jobs_per_s": round(jobs / makespan, 1),
        "slot_refill_ms": {
            "p50": round(percentile(gaps, 0.5), 2),
            "p99": round(percentile(gaps, 0.99), 2),
            "mean": round(statistics.fmean(gaps), 2) if gaps else None,
            "samples": len(gaps),
        },
        "scheduler_pass": passes,
        "controller": controller_figures,
        **({"profile": profiler.summary()} if profile is not None else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=0.5, help="simulated duration of each task")
    parser.add_argument("--slots", type=int, default=1, help="slots per simulated agent")
    parser.add_argument("--profile", type=Path, help="sample the controller with py-spy; raw stacks go here")
    args = parser.parse_args()
    report = run(args.jobs, args.agents, args.seconds, args.slots, args.profile)
    print(json.dumps({"scale_simulation": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
