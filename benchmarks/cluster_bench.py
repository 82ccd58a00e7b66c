#!/usr/bin/env python3
"""TensorFleet's dispatch path beside Ray's on the same machine, as JSON.

- noop jobs per second through a controller and 2 agents (1 slot each: 2 CPUs, like Ray's num_cpus=2),
  submitted all at once ("async": the SDK's batch, submit_many then wait_all, as Ray's ray.get of a list; and
  one SubmitJob and one wait per job beside it) and one after another, each waited for ("sync");
- submit -> result latency p50 / p99 of one noop job;
- cold start: `tensorfleet serve` (controller + local agent) from nothing to the first noop result;
- idle memory (PSS) of `tensorfleet serve` with its local agent and its warm workers, per process, once idle
  (at least 5 s after the first noop result, then until it stops changing: a spare worker may still be
  importing), and again after an iris random forest job (a worker that imported scikit-learn);
- `targets`: issue 21's rows for these figures (benchmarks/bench_targets.py), with the load before and after.
Ray's figures come from benchmarks/ray_peer.py run by RAY_PYTHON (an interpreter with Ray installed in its
own environment); without it the Ray side is skipped with a note. mDNS stays on 127.0.0.1.

With --profile DIR (needs py-spy: pip install py-spy), the controller and one agent with its worker
processes are sampled during the async run; the raw stacks go to DIR and the report names the functions
that were on the stack most often, per process kind (controller, agent daemon, worker).

Usage: RAY_PYTHON=/path/to/venv/bin/python python benchmarks/cluster_bench.py [--jobs 300] [--profile DIR]
       python benchmarks/cluster_bench.py --only dispatch [--jobs 300] [--sequential 100]: the sync latency with the
       p50 of each hop of a noop job (sync_hops_p50_ms, from its events) and the async rate; no cold start, memory
       or Ray
       python benchmarks/cluster_bench.py --only cold [--repeat 5]: only the cold start, each in a fresh data dir
       (the median and each figure); compare before/after by alternating runs, a 2-core machine's load moves it
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

import psutil  # noqa: E402
from bench_targets import load, ratio, row  # noqa: E402
from profiling import Profiler, process_kind  # noqa: E402

from helpers.agents import AgentProcess  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from helpers.servers import free_port  # noqa: E402
from tensorfleet_desktop.client import AsyncClient, Client  # noqa: E402

NOOP = {"algorithm": "noop"}
FOREST = {"name": "iris-random-forest", "algorithm": "random_forest", "dataset": "iris", "model_name": "iris-rf"}


async def throughput_async(address: str, n: int) -> float:
    """As Ray's `ray.get([noop.remote() for _ in range(n)])`: the SDK's batch, submit_many then wait_all."""
    async with AsyncClient(address) as client:
        t0 = time.perf_counter()
        jobs = await client.wait_all([job["id"] for job in await client.submit_many([NOOP] * n)])
        elapsed = time.perf_counter() - t0
        failed = [j for j in jobs if j["state"] != "SUCCEEDED"]
        assert not failed, failed[:3]
        return n / elapsed


async def throughput_one_by_one(address: str, n: int) -> float:
    """n SubmitJob calls (32 at a time), then a wait (a WatchJobs stream) per job: a script that does not batch."""
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


async def sequential(address: str, n: int, hops: list[dict[str, float]] | None = None) -> list[float]:
    """Submit, wait for the result, repeat: the latency of each, in ms. With `hops`, each job's hops too (hop_times)."""
    out = []
    async with AsyncClient(address) as client:
        for _ in range(n):
            start, t0 = time.time(), time.perf_counter()
            job = await client.submit(NOOP)
            submitted = time.perf_counter()
            final = await client.wait(job["id"])
            assert final["state"] == "SUCCEEDED", final
            out.append((time.perf_counter() - t0) * 1000)
            if hops is not None:
                events = [e async for e in client.watch(job["id"])]
                hops.append(hop_times(start, (submitted - t0) * 1000, out[-1], events))
    return out


#: The hops of a noop job, each when the controller recorded its event (ms after the client's submit started): the
#: job stored (QUEUED), placed on an agent, the agent's ACCEPTED heard (RunTask answered, WatchTask's first batch),
#: its RUNNING heard (the agent had a worker: often in the same batch), the task's SUCCEEDED heard (the worker ran
#: it, the agent journaled Finished and streamed it), the job's SUCCEEDED; then the client's wait returned.
HOPS = ("queued", "placed", "accepted", "running", "task_succeeded", "job_succeeded")


def hop_times(start: float, submit_ms: float, total_ms: float, events: list[dict[str, Any]]) -> dict[str, float]:
    """When each hop of HOPS happened, from the job's events (controller clock, the same machine's), with the
    submit RPC's return and the client's wait return; ms after the submit started."""
    at: dict[str, float] = {"submit_returned": submit_ms}
    for event in events:
        ms = (event["time"] - start) * 1000
        state, message = event.get("state"), event.get("message", "")
        if event["kind"] == "job_state" and state in ("QUEUED", "SUCCEEDED"):
            at.setdefault("queued" if state == "QUEUED" else "job_succeeded", ms)
        elif event["kind"] == "task_state" and state == "DISPATCHED":
            at.setdefault("placed" if message.startswith("placed") else "accepted", ms)
        elif event["kind"] == "task_state" and state in ("RUNNING", "SUCCEEDED"):
            at.setdefault("running" if state == "RUNNING" else "task_succeeded", ms)
    at["client_saw_end"] = total_ms
    return at


def hop_summary(hops: list[dict[str, float]]) -> dict[str, float]:
    """p50 of each hop's time after the submit started, and of each step from the hop before it, in ms."""
    names = ["submit_returned", *HOPS, "client_saw_end"]
    out: dict[str, float] = {}
    for name in names:
        values = [h[name] for h in hops if name in h]
        if values:
            out[f"at_{name}"] = round(statistics.median(values), 2)
    order = [*HOPS, "client_saw_end"]
    for before, after in zip(["start", *order], order, strict=False):
        steps = [h[after] - h.get(before, 0.0) for h in hops if after in h and (before == "start" or before in h)]
        if steps:
            out[f"step_{after}"] = round(statistics.median(steps), 2)
    return out


def pss_tree(pid: int) -> tuple[int, dict[str, float], list[dict[str, Any]]]:
    """PSS of a process and its children: the total, MiB per kind of process, and each process.

    The kind is the process's place in the tree, not only its command line: a worker forked from the agent
    (a fork server, or workers forked from one) keeps the agent's command line but is the agent's descendant."""
    root = psutil.Process(pid)
    total, parts, each = 0, dict[str, float](), list[dict[str, Any]]()
    kinds: dict[int, str] = {pid: "controller"}
    for proc in root.children(recursive=True):  # parents come before their children
        try:
            parent_kind = kinds.get(proc.ppid(), "controller")
            named = process_kind(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
        if parent_kind in ("agent", "worker"):
            kinds[proc.pid] = "worker"
        else:
            kinds[proc.pid] = named if named in ("agent", "worker") else "controller child: " + named
    for proc in [root, *root.children(recursive=True)]:
        try:
            pss = proc.memory_full_info().pss
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        kind = kinds.get(proc.pid, "other")
        total += pss
        parts[kind] = round(parts.get(kind, 0.0) + pss / 2**20, 1)
        each.append({"pid": proc.pid, "kind": kind, "pss_mib": round(pss / 2**20, 1), "cmd": cmdline[-100:]})
    return total, parts, each


def settled_pss(pid: int, least: float = 5.0, most: float = 90.0) -> tuple[int, dict[str, float], list[dict[str, Any]]]:
    """pss_tree once the cluster is idle: at least `least` seconds, then until three samples a second apart agree
    within 1 MiB with the same processes (a spare worker still importing, or one being replaced, is not idle
    yet), at most `most` seconds."""
    t0 = time.monotonic()
    time.sleep(least)
    history: list[tuple[int, list[int]]] = []
    while True:
        total, parts, each = pss_tree(pid)
        history.append((total, sorted(p["pid"] for p in each)))
        recent = history[-3:]
        same_processes = len(recent) == 3 and len({tuple(pids) for _, pids in recent}) == 1
        steady = same_processes and max(t for t, _ in recent) - min(t for t, _ in recent) <= 2**20
        if steady or time.monotonic() - t0 > most:
            return total, parts, each
        time.sleep(1.0)


def compiled() -> None:
    """Our packages' bytecode written, as a pip install of the wheel writes it (Ray's packages, installed so, have
    theirs): in a checkout run with PYTHONDONTWRITEBYTECODE=1, as some CI machines set, every start would compile
    each module changed since its last .pyc again (~0.1-0.3 s of a cold start, measured here)."""
    for package in ("agent", "tensorfleet_desktop"):
        compileall.compile_dir(ROOT / package, quiet=1)


def cold_start_and_idle_memory(workdir: Path, memory: bool = True) -> dict[str, Any]:
    """Cold start: `tensorfleet serve` from nothing to its first noop result (its bytecode compiled: `compiled`);
    with `memory`, the idle PSS after it and after an iris random forest job."""
    compiled()
    port = free_port()
    address = f"127.0.0.1:{port}"
    ready = workdir.with_name(workdir.name + ".ready")
    cmd = [sys.executable, "-m", "tensorfleet_desktop", "serve", "--port", str(port), "--data-dir", str(workdir)]
    cmd += ["--interfaces", "127.0.0.1", "--local-agent-slots", "2", "--ready-file", str(ready)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # As the desktop app waits for the serve it starts (local_cluster.py): for its ready file, written once its
        # controller serves and its local agent is added, then for that agent to be ONLINE (its pairing may still
        # run). One stat and then one cheap call every 5 ms: a new client per try (~2 ms of CPU each) took CPU
        # from the start it measured, on a 2-core machine.
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"tensorfleet serve exited with {proc.returncode} before it was ready")
            time.sleep(0.005)
        with Client(address, timeout=5) as client:
            while not any(a["state"] == "ONLINE" for a in client.agents()):
                time.sleep(0.005)
            final = client.wait(client.submit(NOOP)["id"], timeout=60)
            cold = time.perf_counter() - t0
            assert final["state"] == "SUCCEEDED", final
            if not memory:
                client.shutdown()
                proc.wait(30)
                return {"cold_start_s": round(cold, 3)}
            idle, idle_parts, idle_each = settled_pss(proc.pid)
            forest = client.wait(client.submit(FOREST)["id"], timeout=300)  # a warm worker that fitted sklearn
            assert forest["state"] == "SUCCEEDED", forest
            after, after_parts, after_each = settled_pss(proc.pid)
            client.shutdown()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {
        "cold_start_s": round(cold, 2),
        "idle_pss_mib": round(idle / 2**20, 1),
        "idle_pss_mib_by_process": idle_parts,
        "idle_pss_processes": idle_each,
        "idle_pss_mib_after_sklearn_job": round(after / 2**20, 1),
        "idle_pss_mib_by_process_after_sklearn_job": after_parts,
        "idle_pss_processes_after_sklearn_job": after_each,
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


def target_rows(ours: dict[str, Any], ray: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 21's rows this benchmark measures (benchmarks/bench_targets.py)."""
    skipped = ray.get("skipped", "")
    return [
        row(
            "no-op job dispatch (async submit, all done) vs Ray async tasks",
            "tasks/s",
            ours["tasks_per_s_async"],
            ray.get("tasks_per_s_async"),
            goal=">= 1x (stretch >= 3x) (TensorFleet / Ray)",
            at_least=1.0,
            ratio_value=ratio(ours["tasks_per_s_async"], ray.get("tasks_per_s_async")),
            note="submit_many + wait_all, as ray.get of a list; one SubmitJob and one wait per job: "
            f"{ours.get('tasks_per_s_async_one_call_each')} tasks/s. {skipped}".strip(),
        ),
        row(
            "sync submit->SUCCEEDED p50 of a no-op job",
            "ms",
            ours["latency_ms_p50"],
            ray.get("latency_ms_p50"),
            goal="<= 5 ms (TensorFleet figure)",
            at_most=5.0,
            on="tensorfleet",
            ratio_value=ratio(ours["latency_ms_p50"], ray.get("latency_ms_p50")),
        ),
        row(
            "cold start to first result vs Ray",
            "s",
            ours["cold_start_s"],
            ray.get("cold_start_s"),
            goal="<= 0.2x (TensorFleet s / Ray s)",
            at_most=0.2,
            ratio_value=ratio(ours["cold_start_s"], ray.get("cold_start_s")),
            note=skipped,
        ),
        row(
            "idle PSS, controller + one agent + its warm workers",
            "MiB",
            ours["idle_pss_mib"],
            ray.get("idle_pss_mib"),
            goal="<= 160 MiB (TensorFleet figure)",
            at_most=160.0,
            on="tensorfleet",
            ratio_value=ratio(ours["idle_pss_mib"], ray.get("idle_pss_mib")),
            note=f"after one noop job; {ours['idle_pss_mib_after_sklearn_job']} MiB after an iris random forest job",
        ),
    ]


def cold_only(repeat: int, load_before: dict[str, Any]) -> int:
    """--only cold: each cold start in a fresh data dir, one after another; the median and each figure."""
    figures = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="tensorfleet-bench-") as tmp:
            figures.append(cold_start_and_idle_memory(Path(tmp) / "cold", memory=False)["cold_start_s"])
    report = {
        "load_before": load_before,
        "load_after": load(),
        "tensorfleet": {"cold_start_s": round(statistics.median(figures), 3), "cold_start_s_each": figures},
    }
    print(json.dumps(report, indent=2))
    return 0


@contextlib.contextmanager
def bench_cluster(root: Path) -> Iterator[tuple[ControllerProcess, list[AgentProcess]]]:
    """A controller and 2 agents of 1 slot (2 CPUs, like Ray's num_cpus=2), online and warmed by one noop job."""
    agents = [AgentProcess(root / f"a{i}", name=f"bench-{i}", cpu_slots=1, spare_workers=1).start() for i in range(2)]
    controller = ControllerProcess(root / "controller").start()
    try:
        with Client(controller.address) as client:
            while sum(a["state"] == "ONLINE" for a in client.agents()) < 2:
                time.sleep(0.1)
            client.wait(client.submit(NOOP)["id"], timeout=60)  # warm
        yield controller, agents
    finally:
        controller.stop()
        for agent in agents:
            agent.stop()


def dispatch_figures(rate: float | None, one_by_one: float | None, latencies: list[float]) -> dict[str, Any]:
    latencies = sorted(latencies)
    return {
        "tasks_per_s_async": round(rate, 1) if rate is not None else None,
        "tasks_per_s_async_one_call_each": round(one_by_one, 1) if one_by_one is not None else None,
        "tasks_per_s_sync": round(1000 / statistics.mean(latencies), 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2),
    }


def dispatch_only(jobs: int, sequential_jobs: int, load_before: dict[str, Any]) -> int:
    """--only dispatch: the async rate and the sync latency with each hop's p50, no cold start, memory or Ray."""
    hops: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="tensorfleet-bench-") as tmp, bench_cluster(Path(tmp)) as (controller, _):
        latencies = asyncio.run(sequential(controller.address, sequential_jobs, hops))
        rate = asyncio.run(throughput_async(controller.address, jobs)) if jobs else None
        one_by_one = asyncio.run(throughput_one_by_one(controller.address, jobs)) if jobs else None
    ours = {**dispatch_figures(rate, one_by_one, latencies), "sync_hops_p50_ms": hop_summary(hops)}
    print(json.dumps({"load_before": load_before, "load_after": load(), "tensorfleet": ours}, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=300, help="noop jobs for the async throughput run")
    parser.add_argument("--sequential", type=int, default=100, help="noop jobs for the sync run and latency")
    parser.add_argument("--profile", type=Path, help="sample the async run with py-spy; raw stacks go here")
    parser.add_argument(
        "--only",
        choices=["cold", "dispatch"],
        help="cold: only the cold start (serve from nothing to the first noop result), --repeat times; dispatch: "
        "only the sync latency (with each hop's p50: sync_hops_p50_ms) and the async rate (--jobs 0: none)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="cold starts measured with --only cold (default 5)")
    args = parser.parse_args()
    load_before = load()
    if args.only == "cold":
        return cold_only(args.repeat, load_before)
    if args.only == "dispatch":
        return dispatch_only(args.jobs, args.sequential, load_before)
    with tempfile.TemporaryDirectory(prefix="tensorfleet-bench-") as tmp:
        root = Path(tmp)
        with bench_cluster(root) as (controller, agents):
            assert controller.proc is not None and agents[0].proc is not None
            targets = {"controller": controller.proc.pid, "agent": agents[0].proc.pid}
            with Profiler(args.profile, targets) as profiler:
                rate = asyncio.run(throughput_async(controller.address, args.jobs))
            one_by_one = asyncio.run(throughput_one_by_one(controller.address, args.jobs))
            latencies = asyncio.run(sequential(controller.address, args.sequential))
        startup = cold_start_and_idle_memory(root / "cold")
    ours = {**dispatch_figures(rate, one_by_one, latencies), **startup}
    ray = ray_side(args.jobs, args.sequential, args.sequential)
    report: dict[str, Any] = {"load_before": load_before, "load_after": load(), "tensorfleet": ours, "ray": ray}
    if args.profile is not None:
        report["profile"] = profiler.summary()
    report["targets"] = target_rows(ours, ray)
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
