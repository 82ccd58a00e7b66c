#!/usr/bin/env python3
"""Ray's side of benchmarks/cluster_bench.py, run with an interpreter that has Ray (its own environment, so
Ray's pins never touch TensorFleet's). Prints one JSON document.

    RAY_PYTHON=/path/to/ray-venv/bin/python python benchmarks/cluster_bench.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

COLD_START = """
import time
t0 = time.perf_counter()
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
@ray.remote
def noop():
    return None
ray.get(noop.remote())
print(time.perf_counter() - t0)
ray.shutdown()
"""


def pss_of_ray_processes() -> int:
    import psutil

    total = 0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid == psutil.Process().pid or "ray" in (proc.info["name"] or "") or "/ray/" in cmd:
                total += proc.memory_full_info().pss
        except (psutil.Error, OSError):
            continue
    return total


def main() -> int:
    n_async, n_sync, n_latency = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    cold = [float(subprocess.check_output([sys.executable, "-c", COLD_START], text=True).strip()) for _ in range(2)]

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])  # warm the worker pool, as Ray's own microbenchmark does
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(n_async)])
    async_rate = n_async / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n_sync):
        ray.get(noop.remote())
    sync_rate = n_sync / (time.perf_counter() - t0)
    latencies = []
    for _ in range(n_latency):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        latencies.append((time.perf_counter() - t0) * 1000)
    time.sleep(5)  # idle: let the workers settle
    idle = pss_of_ray_processes()
    ray.shutdown()
    latencies.sort()
    print(
        json.dumps(
            {
                "version": ray.__version__,
                "tasks_per_s_async": round(async_rate, 1),
                "tasks_per_s_sync": round(sync_rate, 1),
                "latency_ms_p50": round(statistics.median(latencies), 2),
                "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 2),
                "cold_start_s": round(min(cold), 2),
                "idle_pss_mib": round(idle / 2**20, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
