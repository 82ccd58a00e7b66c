#!/usr/bin/env python3
"""TensorFleet's dispatch path beside Ray's on the same machine, as JSON.

- noop jobs per second through a controller and 2 agents (1 slot each: 2 CPUs, like Ray's num_cpus=2),
  submitted all at once ("async") and one after another, each waited for ("sync");
- submit -> result latency p50 / p99 of one noop job;
- cold start: `tensorfleet serve` (controller + local agent) from nothing to the first noop result;
- idle memory (PSS) of `tensorfleet serve` with its local agent.
Ray's figures come from benchmarks/ray_peer.py run by RAY_PYTHON (an interpreter with Ray installed in its
own environment); without it the Ray side is skipped with a note. mDNS stays on 127.0.0.1.

With --profile DIR (needs py-spy: pip install py-spy), the controller and one agent with its worker
processes are sampled during the async run; the raw stacks go to DIR and the report names the functions
that were on the stack most often, per process kind (controller, agent daemon, worker).

Usage: RAY_PYTHON=/path/to/venv/bin/python python benchmarks/cluster_bench.py [--jobs 300] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

import psutil  # noqa: E402
from profiling import Profiler, process_kind  # noqa: E402

from helpers.agents import AgentProcess  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from helpers.servers import free_port  # noqa: E402
from tensorfleet_desktop.client import AsyncClient, Client  # noqa: E402

NOOP = {"algorithm": "noop"}
AIMS = {"dispatch_vs_ray_async": 3.0, "p50_latency_vs_ray": 0.5, "cold_start_vs_ray": 0.3, "idle_memory_vs_ray": 0.35}


async def throughput_async(address: str, n: int) -> float:
    async with AsyncClient(address) as client:
        gate = asyncio.Semaphore(32)

        async def one() -> str:
            async with gate:
                return str((await client.submit(NOOP))["id"])

        t0 = time.perf_counter()
        ids = set(await asyncio.gather(*(one() for _ in range(n))))
        jobs = await asyncio.gather(*(client.wait(job_id) for job_id in ids))  # each a WatchJob stream
        elapsed = time.perf_counter() - t0
        failed = [j for j in jobs if j["state"] != "SUCCEEDED"]
        assert not failed, failed[:3]
        return n / elapsed


async def sequential(address: str, n: int) -> list[float]:
    """Submit, wait for the result, repeat: the latency of each, in ms."""
    out = []
    async with AsyncClient(address) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            job = await client.submit(NOOP)
            final = await client.wait(job["id"])
            assert final["state"] == "SUCCEEDED", final
            out.append((time.perf_counter() - t0) * 1000)
    return out


def pss_tree(pid: int) -> tuple[int, dict[str, float]]:
    """PSS of a process and its children: the total, and MiB per kind of process."""
    root = psutil.Process(pid)
    total, parts = 0, {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            pss = proc.memory_full_info().pss
            kind = process_kind(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
        total += pss
        parts[kind] = round(parts.get(kind, 0.0) + pss / 2**20, 1)
    return total, parts


def cold_start_and_idle_memory(workdir: Path) -> dict[str, Any]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "tensorfleet_desktop", "serve", "--port", str(port), "--data-dir", str(workdir)]
    cmd += ["--interfaces", "127.0.0.1", "--local-agent-slots", "2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:  # a client made before the controller wrote its connection file has no token: one per try
                with Client(address, timeout=5) as probe:
                    if any(a["state"] == "ONLINE" for a in probe.agents()):
                        break
            except Exception:  # not up yet
                pass
            time.sleep(0.02)
        with Client(address, timeout=5) as client:
            final = client.wait(client.submit(NOOP)["id"], timeout=60)
            cold = time.perf_counter() - t0
            assert final["state"] == "SUCCEEDED", final
            time.sleep(5)  # idle
            idle, idle_parts = pss_tree(proc.pid)
            client.shutdown()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {
        "cold_start_s": round(cold, 2),
        "idle_pss_mib": round(idle / 2**20, 1),
        "idle_pss_mib_by_process": idle_parts,
    }


def ray_side(n_async: int, n_sync: int, n_latency: int) -> dict[str, Any]:
    python = os.environ.get("RAY_PYTHON")
    if not python:
        return {"skipped": "set RAY_PYTHON to an interpreter with Ray installed (pip install ray) to compare"}
    out = subprocess.run(
        [python, str(ROOT / "benchmarks" / "ray_peer.py"), str(n_async), str(n_sync), str(n_latency)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        return {"skipped": f"ray_peer.py failed: {out.stderr[-800:]}"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=300, help="noop jobs for the async throughput run")
    parser.add_argument("--sequential", type=int, default=100, help="noop jobs for the sync run and latency")
    parser.add_argument("--profile", type=Path, help="sample the async run with py-spy; raw stacks go here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tensorfleet-bench-") as tmp:
        root = Path(tmp)
        agents = [
            AgentProcess(root / f"a{i}", name=f"bench-{i}", cpu_slots=1, spare_workers=1).start() for i in range(2)
        ]
        controller = ControllerProcess(root / "controller").start()
        try:
            with Client(controller.address) as client:
                while sum(a["state"] == "ONLINE" for a in client.agents()) < 2:
                    time.sleep(0.1)
                client.wait(client.submit(NOOP)["id"], timeout=60)  # warm
            assert controller.proc is not None and agents[0].proc is not None
            targets = {"controller": controller.proc.pid, "agent": agents[0].proc.pid}
            with Profiler(args.profile, targets) as profiler:
                rate = asyncio.run(throughput_async(controller.address, args.jobs))
            latencies = asyncio.run(sequential(controller.address, args.sequential))
        finally:
            controller.stop()
            for agent in agents:
                agent.stop()
        startup = cold_start_and_idle_memory(root / "cold")
    latencies.sort()
    ours = {
        "tasks_per_s_async": round(rate, 1),
        "tasks_per_s_sync": round(1000 / statistics.mean(latencies), 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2),
        **startup,
    }
    ray = ray_side(args.jobs, args.sequential, args.sequential)
    report: dict[str, Any] = {"tensorfleet": ours, "ray": ray, "aims": AIMS}
    if args.profile is not None:
        report["profile"] = profiler.summary()
    if "skipped" not in ray:
        report["ratios"] = {
            "dispatch_vs_ray_async": round(ours["tasks_per_s_async"] / ray["tasks_per_s_async"], 3),
            "sync_vs_ray_sync": round(ours["tasks_per_s_sync"] / ray["tasks_per_s_sync"], 3),
            "p50_latency_vs_ray": round(ours["latency_ms_p50"] / ray["latency_ms_p50"], 2),
            "cold_start_vs_ray": round(ours["cold_start_s"] / ray["cold_start_s"], 3),
            "idle_memory_vs_ray": round(ours["idle_pss_mib"] / ray["idle_pss_mib"], 3),
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
