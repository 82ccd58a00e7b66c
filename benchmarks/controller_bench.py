#!/usr/bin/env python3
"""Controller figures as one JSON document, with local peers side by side in the same run.

- demo wall time: `tensorfleet demo --json` end to end.
- cold start: launching `tensorfleet serve` (with its local agent) until a submitted `noop` job has SUCCEEDED;
  peer: a bare interpreter importing the same libraries.
- idle memory (RSS/PSS) of `tensorfleet serve` plus its local agent, before and after running a task.
- noop throughput through the controller and 2 agents (2 slots each): N single-task jobs submitted at once;
  peer: the same N no-op calls through a 2-process concurrent.futures pool (no network, no journal).

Usage: python benchmarks/controller_bench.py [--jobs 100]. mDNS stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

from helpers.agents import AgentProcess  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from helpers.processes import memory  # noqa: E402
from tensorfleet_desktop.client import Client  # noqa: E402


def tree(pid: int) -> list[int]:
    root = psutil.Process(pid)
    return [pid, *(c.pid for c in root.children(recursive=True))]


def demo_wall_time() -> dict[str, object]:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "tensorfleet_desktop", "demo", "--json"], capture_output=True, text=True, timeout=300
    )
    elapsed = time.monotonic() - t0
    body = json.loads(out.stdout) if out.returncode == 0 else {}
    return {
        "seconds": round(elapsed, 1),
        "exit_code": out.returncode,
        "jobs_succeeded": sum(j["state"] == "SUCCEEDED" for j in body.get("jobs", [])),
    }


def cold_start(tmp: Path) -> dict[str, object]:
    t0 = time.monotonic()
    controller = ControllerProcess(tmp / "cold", local_agent=True, extra_args=["--no-mdns"]).start()
    try:
        with Client(controller.address) as client:
            job = client.submit({"algorithm": "noop"})
            final = client.wait(job["id"], timeout=120)
        first_result = time.monotonic() - t0
        assert final["state"] == "SUCCEEDED", final
        assert controller.proc is not None
        after_task = memory(tree(controller.proc.pid))
    finally:
        controller.stop()
    controller = ControllerProcess(tmp / "idle", local_agent=True, extra_args=["--no-mdns"]).start()
    try:
        time.sleep(5)
        assert controller.proc is not None
        idle = memory(tree(controller.proc.pid))
    finally:
        controller.stop()
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import grpc, zeroconf, psutil, sklearn, cryptography, rich"], check=True)
    peer = time.monotonic() - t0
    return {
        "serve_to_first_task_result_s": round(first_result, 2),
        "peer_python_importing_the_same_libraries_s": round(peer, 2),
        "idle_memory_serve_plus_local_agent": idle,
        "memory_after_one_task_with_warm_worker": after_task,
    }


def _noop(_: int) -> None:
    return None


def throughput(tmp: Path, jobs: int) -> dict[str, object]:
    agents = [AgentProcess(tmp / f"tp-agent{i}", name=f"tp-agent-{i}", cpu_slots=2).start() for i in range(2)]
    controller = ControllerProcess(tmp / "tp-ctl").start()
    try:
        with Client(controller.address) as client:
            deadline = time.monotonic() + 30
            while sum(a["state"] == "ONLINE" for a in client.agents()) < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError("agents not found")
                time.sleep(0.1)
            t0 = time.monotonic()
            ids = [client.submit({"algorithm": "noop"})["id"] for _ in range(jobs)]
            submitted = time.monotonic() - t0
            latencies = []
            for job_id in ids:
                final = client.wait(job_id, timeout=600)
                assert final["state"] == "SUCCEEDED", final
                latencies.append(final["finished_at"] - final["created_at"])
            elapsed = time.monotonic() - t0
    finally:
        controller.stop()
        for agent in agents:
            agent.stop()
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        list(pool.map(_noop, range(10)))  # warm
        t0 = time.monotonic()
        list(pool.map(_noop, range(jobs)))
        peer = time.monotonic() - t0
    latencies.sort()
    return {
        "tensorfleet": {
            "jobs": jobs,
            "jobs_per_s": round(jobs / elapsed, 1),
            "submit_per_s": round(jobs / submitted),
            "latency_p50_s": round(latencies[len(latencies) // 2], 3),
            "latency_p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        },
        "peer_process_pool_2_workers": {"calls": jobs, "calls_per_s": round(jobs / peer)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        result = {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "demo": demo_wall_time(),
            "cold_start": cold_start(tmp),
            "noop_throughput_controller_plus_2_agents": throughput(tmp, args.jobs),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
