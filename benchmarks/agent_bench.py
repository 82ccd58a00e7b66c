#!/usr/bin/env python3
"""Agent figures, side by side with a bare-gRPC peer, as one JSON document on stdout.

- start -> advertised: spawn of `tensorfleet-agent` until a zeroconf browser (loopback) resolves it;
  peer: the same interpreter starting and importing grpc + zeroconf, doing nothing else.
- idle memory (RSS and PSS) of the daemon, alone and with its warm workers;
  peer: an idle interpreter with grpc.aio serving an empty server.
- events/s through WatchTask: an `emit` task of N points followed live, then replayed;
  peer: a grpc.aio server streaming N prebuilt one-event messages from memory (no worker, no journal).
- telemetry cadence: the gaps between StreamTelemetry samples asked for every 0.2 s (min, median, max over 25
  gaps; the tests only check that samples keep coming).

- task latency: noop tasks one after another, RunTask sent -> Finished received by an AgentClient (the agent's
  share of a sync submit -> SUCCEEDED), p50 / p99, and the agent's own phases from the events' timestamps:
  accepted (RunTask -> ACCEPTED), forked (ACCEPTED -> RUNNING: a warm worker taken, or one forked, ready;
  every task is a new job's, so a noop's worker is the warm one of its family), ran (RUNNING ->
  Finished: the task and its worker's cleanup), seen (Finished's time -> the watcher has it: journal commit and
  stream).

- throughput (--throughput): noop tasks through an agent of 2 CPU slots, each sent as the controller does
  (AgentClient.run_and_watch: started and followed in one call), at most --concurrency in flight and never more than
  the agent's free slots; tasks/s and the agent's CPU per task (psutil user + system time, the daemon apart from its
  fork server and workers), the figure the agent's per-task costs are cut against: CPU time barely moves with the
  other load on a shared box, where a rate does.

Usage: python benchmarks/agent_bench.py [--points 20000] [--events-only] [--latency-only [--tasks 200]]
[--throughput [--tasks 1000] [--concurrency 8] [--profile DIR]]. mDNS stays on 127.0.0.1. --events-only measures
just the events/s from report() in a worker to an AgentClient watcher (the path of a metric point inside the agent),
with the peer stream beside it. --latency-only measures just the task latency (with the load average before and
after). --profile samples the agent and its children with py-spy (PY_SPY) during the throughput run: raw stacks in
DIR/agent.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from profiling import Profiler, tree_cpu  # noqa: E402

from helpers.agents import AgentProcess  # noqa: E402
from helpers.processes import memory  # noqa: E402
from tensorfleet_agent._generated import agent_pb2 as pb  # noqa: E402
from tensorfleet_agent._generated import agent_pb2_grpc as pb_grpc  # noqa: E402
from tensorfleet_agent.core.types import Finished, TaskSpec  # noqa: E402
from tensorfleet_agent.discovery.browse import AgentBrowser  # noqa: E402
from tensorfleet_agent.rpc.client import AgentClient  # noqa: E402
from tensorfleet_agent.rpc.server import create_server  # noqa: E402

os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"


async def start_to_advertised(tmp: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        found = asyncio.Event()

        def seen(_name: str, agent: object, found: asyncio.Event = found) -> None:
            if agent is not None:
                found.set()

        browser = AgentBrowser(["127.0.0.1"], seen)
        await browser.start()
        agent = AgentProcess(tmp / f"start{i}", name=f"bench{i}")
        t0 = time.monotonic()
        await asyncio.to_thread(agent.start)
        await asyncio.wait_for(found.wait(), 30)
        times.append(time.monotonic() - t0)
        await browser.stop()
        agent.stop()
    return times


def peer_start(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import grpc, zeroconf, psutil"], check=True)
        times.append(time.monotonic() - t0)
    return times


async def watch_rate(client: AgentClient, task_id: str, points: int) -> dict[str, float]:
    await client.run_task(TaskSpec(task_id, "bench", "emit", {"points": points}))
    t0 = time.monotonic()
    n = 0
    async for event in client.watch_task(task_id):
        n += 1
        if isinstance(event.payload, Finished):
            break
    live = time.monotonic() - t0
    t0 = time.monotonic()
    replayed = sum([1 async for _ in client.watch_task(task_id)])
    replay = time.monotonic() - t0
    return {
        "events": n,
        "live_events_per_s": round(n / live),
        "replay_events_per_s": round(replayed / replay),
    }


class _Peer(pb_grpc.AgentServiceServicer):
    def __init__(self, points: int) -> None:
        self.events = [  # one event per message: what a plain stream of prebuilt messages does
            pb.TaskEventBatch(
                events=[
                    pb.TaskEvent(
                        task_id="peer",
                        seq=i + 1,
                        time=time.time(),
                        metric=pb.MetricPoint(step=i, name="value", value=float(i), wall_time=time.time()),
                    )
                ]
            )
            for i in range(points)
        ]

    async def WatchTask(self, request, context):  # type: ignore[no-untyped-def]
        for event in self.events:
            yield event


async def peer_rate(points: int) -> dict[str, float]:
    peer = _Peer(points)  # type: ignore[abstract]  # serves WatchTask only
    server, port = create_server([lambda s: pb_grpc.add_AgentServiceServicer_to_server(peer, s)], "127.0.0.1", 0)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        t0 = time.monotonic()
        n = 0
        async for _ in stub.WatchTask(pb.WatchTaskRequest(task_id="peer")):
            n += 1
        elapsed = time.monotonic() - t0
    await server.stop(None)
    return {"events": n, "events_per_s": round(n / elapsed)}


def peer_idle_memory() -> dict[str, float]:
    code = (
        "import asyncio, grpc, zeroconf, psutil\n"
        "async def main():\n"
        "    s = grpc.aio.server(); s.add_insecure_port('127.0.0.1:0'); await s.start(); await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(3)
        return memory([proc.pid])
    finally:
        proc.kill()
        proc.wait()


async def telemetry_cadence(client: AgentClient, period: float = 0.2, gaps: int = 25) -> dict[str, float]:
    times: list[float] = []
    async for sample in client.telemetry(period):
        times.append(sample.time)
        if len(times) > gaps:
            break
    spaced = sorted(b - a for a, b in itertools.pairwise(times))
    return {
        "period_s": period,
        "gap_min_s": round(spaced[0], 4),
        "gap_median_s": round(spaced[len(spaced) // 2], 4),
        "gap_max_s": round(spaced[-1], 4),
    }


async def task_latency(client: AgentClient, tasks: int) -> dict[str, object]:
    """Sequential noop tasks: RunTask -> Finished as a client sees it, and the agent's phases (event times)."""
    total: list[float] = []
    phases: dict[str, list[float]] = {"accepted": [], "forked": [], "ran": [], "seen": []}
    for i in range(tasks + 5):  # the first few warm the fork server and the channel up: not counted
        task_id = f"lat{i}"
        t0 = time.time()
        await client.run_task(TaskSpec(task_id, f"latjob{i}", "noop", {}))
        times: dict[str, float] = {}
        async for event in client.watch_task(task_id):
            payload = event.payload
            state = getattr(payload, "state", None)
            if state is not None:
                times.setdefault(str(getattr(state, "value", state)), event.time)
            if isinstance(payload, Finished):
                times["finished"] = event.time
                break
        t1 = time.time()
        if i < 5:
            continue
        total.append(t1 - t0)
        accepted, running = times.get("ACCEPTED", t0), times.get("RUNNING", t0)
        phases["accepted"].append(accepted - t0)
        phases["forked"].append(running - accepted)
        phases["ran"].append(times["finished"] - running)
        phases["seen"].append(t1 - times["finished"])

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "tasks": tasks,
        "p50_ms": ms(total, 0.5),
        "p99_ms": ms(total, 0.99),
        "phases_p50_ms": {name: ms(values, 0.5) for name, values in phases.items()},
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def latency_only(tmp: Path, tasks: int) -> dict[str, object]:
    agent = AgentProcess(tmp / "latency", cpu_slots=1)
    await asyncio.to_thread(agent.start)
    try:
        async with agent.client() as client:
            before = _load()
            result = await task_latency(client, tasks)
            return {**result, "load_before": before, "load_after": _load()}
    finally:
        agent.stop()


async def events_only(tmp: Path, points: int, runs: int) -> dict[str, object]:
    agent = AgentProcess(tmp / "events", cpu_slots=1)
    await asyncio.to_thread(agent.start)
    try:
        async with agent.client() as client:
            rates = [await watch_rate(client, f"emit{i}", points) for i in range(runs)]
    finally:
        agent.stop()
    best = max(rates, key=lambda r: r["live_events_per_s"])
    return {
        "tensorfleet_agent": {"points": points, **best, "runs_live": [r["live_events_per_s"] for r in rates]},
        "peer_grpc_stream_from_memory": await peer_rate(points),
    }


async def _run_noop(client: AgentClient, task_id: str) -> int:
    """One noop task started and followed as the controller does; returns how often the agent said busy first."""
    busy = 0
    while True:
        try:
            _accepted, events = await client.run_and_watch(TaskSpec(task_id, f"job-{task_id}", "noop", {}))
            break
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            busy += 1  # its slot is not free yet as the agent sees it: as the controller, try again shortly
            await asyncio.sleep(0.001)
    try:
        async for event in events:
            if isinstance(event.payload, Finished):
                if event.payload.status.value != "SUCCEEDED":
                    raise RuntimeError(f"task {task_id} ended {event.payload.status.value}: {event.payload.error}")
                break
    finally:
        await events.aclose()
    return busy


async def throughput(tmp: Path, tasks: int, concurrency: int, profile: Path | None) -> dict[str, object]:
    """Noop tasks through a 2-slot agent, at most min(concurrency, slots) in flight; rate and CPU per task."""
    slots = 2
    agent = AgentProcess(tmp / "throughput", cpu_slots=slots, spare_workers=1)
    await asyncio.to_thread(agent.start)
    try:
        assert agent.proc is not None
        pid = agent.proc.pid
        async with agent.client() as client:
            in_flight = asyncio.Semaphore(min(concurrency, slots))  # the agent refuses a task no slot is free for
            busy = 0

            async def one(task_id: str) -> None:
                nonlocal busy
                async with in_flight:
                    busy += await _run_noop(client, task_id)

            await asyncio.gather(*(one(f"warm{i}") for i in range(20)))  # fork server, warm workers, channel
            await asyncio.sleep(0.5)
            busy = 0
            load_before = _load()
            before = tree_cpu(pid)
            with Profiler(profile, {"agent": pid}):
                t0 = time.perf_counter()
                await asyncio.gather(*(one(f"t{i}") for i in range(tasks)))
                elapsed = time.perf_counter() - t0
            await asyncio.sleep(0.2)  # the last workers parked
            after = tree_cpu(pid)
    finally:
        agent.stop()
    # the daemon itself, and its fork server and workers (alive, or reaped: their parents' children_* times)
    roles = (("daemon", "self"), ("workers", "children"))
    per_task = {role: round(1000 * (after[k] - before[k]) / tasks, 3) for role, k in roles}
    return {
        "tasks": tasks,
        "in_flight": min(concurrency, slots),
        "tasks_per_s": round(tasks / elapsed, 1),
        "agent_cpu_ms_per_task": {**per_task, "total": round(sum(per_task.values()), 3)},
        "refused_busy": busy,
        "load_before": load_before,
        "load_after": _load(),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events-only", action="store_true", help="only the events/s figure")
    parser.add_argument("--latency-only", action="store_true", help="only the noop task latency")
    parser.add_argument("--throughput", action="store_true", help="only the noop tasks/s and CPU per task")
    parser.add_argument("--concurrency", type=int, default=8, help="tasks in flight at most (--throughput)")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output dir (--throughput)")
    parser.add_argument("--tasks", type=int, default=None, help="noop tasks (latency: 200, throughput: 1000)")
    args = parser.parse_args()
    if args.throughput:
        with tempfile.TemporaryDirectory() as tmpdir:
            result = await throughput(Path(tmpdir), args.tasks or 1000, args.concurrency, args.profile)
        print(json.dumps({"machine": {"cpus": os.cpu_count()}, "throughput": result}, indent=2))
        return
    args.tasks = args.tasks or 200
    out: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if args.events_only:
            out["watch_task_events_per_s"] = await events_only(tmp, args.points, args.runs)
            print(json.dumps(out, indent=2))
            return
        if args.latency_only:
            out["task_latency"] = await latency_only(tmp, args.tasks)
            print(json.dumps(out, indent=2))
            return
        starts = await start_to_advertised(tmp, args.runs)
        peer_starts = peer_start(args.runs)
        out["start_to_advertised_s"] = {
            "tensorfleet_agent": {
                "median": round(sorted(starts)[len(starts) // 2], 3),
                "runs": [round(t, 3) for t in starts],
            },
            "peer_python_import_grpc_zeroconf": {"median": round(sorted(peer_starts)[len(peer_starts) // 2], 3)},
        }
        agent = AgentProcess(tmp / "main", cpu_slots=1)
        await asyncio.to_thread(agent.start)
        try:
            assert agent.proc is not None
            await asyncio.sleep(3)
            idle = memory([agent.proc.pid])
            async with agent.client() as client:
                rates = [await watch_rate(client, f"emit{i}", args.points) for i in range(args.runs)]
                out["telemetry_cadence"] = await telemetry_cadence(client)
                out["task_latency"] = {**await task_latency(client, args.tasks), "load": _load()}
            workers = [c.pid for c in psutil.Process(agent.proc.pid).children()]
            await asyncio.sleep(1)
            out["idle_memory"] = {
                "tensorfleet_agent": idle,
                "tensorfleet_agent_plus_warm_worker": memory([agent.proc.pid, *workers]),
                "peer_idle_grpc_server": peer_idle_memory(),
            }
        finally:
            agent.stop()
        best = max(rates, key=lambda r: r["live_events_per_s"])
        out["watch_task_events_per_s"] = {
            "tensorfleet_agent": {
                "points": args.points,
                **best,
                "runs_live": [r["live_events_per_s"] for r in rates],
            },
            "peer_grpc_stream_from_memory": await peer_rate(args.points),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
