#!/usr/bin/env python3
"""Scale simulation: 10,000 queued jobs, 200 simulated agents speaking the real AgentService, as JSON.

A real `tensorfleet serve` controller (no local agent) gets --jobs `sleep` jobs queued first, then
--agents simulated agents (benchmarks/fake_agents.py: real daemons, real gRPC + TLS + pairing, tasks
simulated without worker processes) are added by address. Reported:
- submit rate of the queue (one SubmitJob per job, 32 at once; or --submit-batch N jobs per SubmitJobs call,
  Client.submit_many, one call at a time: the report says which), makespan and completed jobs/s against the ideal
  (jobs x seconds / slots);
- scheduling decision latency as the agents see it: from a slot freeing (task finished) to the next
  task arriving on that agent, p50/p99 (event stream -> controller -> scheduler pass -> RunTask);
- the controller's own scheduler pass durations (its `tensorfleet_schedule_pass_seconds` histogram);
- controller CPU (average percent of one core, and seconds) and peak RSS/PSS.
mDNS stays on 127.0.0.1 (the simulated agents do not advertise).

The simulated agents stand in for other machines, yet share this box's CPUs with the controller: they run at
niceness --sim-nice (default 10), so the CPU a real cluster would never take from its controller goes to the
controller first (on 2 cores at equal niceness, grpc's own threads in the controller waited ~130 ms for a turn
behind them, and a ListJobs page with them; an HTTP page, read on the loop's thread, ~15 ms). --sim-nice 0 shares
the CPUs equally.

With --profile DIR (py-spy), the controller is sampled while the queue drains.

Usage: python benchmarks/scale_sim.py [--jobs 1000] [--agents 50] [--seconds 0.5] [--submit-batch 1000] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
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
SIM_NICE = 10  # the simulated agents' niceness: their CPU is not the controller's, as on a real LAN (--sim-nice)
sys.path.insert(0, str(ROOT / "tests"))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"

import psutil  # noqa: E402
from bench_targets import load, row  # noqa: E402
from profiling import Profiler  # noqa: E402

from helpers.agents import CLUSTER_TOKEN  # noqa: E402
from helpers.controller import ControllerProcess  # noqa: E402
from helpers.servers import free_port  # noqa: E402
from tensorfleet_desktop.client import AsyncClient, Client  # noqa: E402
from tensorfleet_desktop.connection import client_token  # noqa: E402


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

    if not count:
        return {"missing": f"{name} not exported, or no pass yet"}

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


class PageTimer(threading.Thread):
    """A reader paging the jobs list while the queue drains: ListJobs(limit) over gRPC and, when the controller
    serves HTTP, GET /api/v1/jobs?limit=..., each timed (ms). One call at a time, `pause` seconds apart."""

    def __init__(self, address: str, http: tuple[int, str] | None, limit: int, pause: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.address, self.http, self.limit, self.pause = address, http, limit, pause
        self.grpc_ms: list[float] = []
        self.http_ms: list[float] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        with Client(self.address, timeout=60) as client:
            connection = self._http_connection()
            while not self.stop_event.is_set():
                self.sample(client, connection)
                self.stop_event.wait(self.pause)

    def _http_connection(self) -> http.client.HTTPConnection | None:
        return http.client.HTTPConnection("127.0.0.1", self.http[0], timeout=60) if self.http else None

    def sample(self, client: Client, connection: http.client.HTTPConnection | None) -> None:
        t0 = time.perf_counter()
        try:
            page = client.jobs(limit=self.limit)
            assert len(page) <= self.limit
            self.grpc_ms.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:  # a figure missing says why
            self.errors.append(f"grpc: {exc}"[:200])
        if connection is None or self.http is None:
            return
        t0 = time.perf_counter()
        try:
            connection.request(
                "GET", f"/api/v1/jobs?limit={self.limit}", headers={"Authorization": f"Bearer {self.http[1]}"}
            )
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body[:200])
            self.http_ms.append((time.perf_counter() - t0) * 1000)
        except Exception as exc:
            self.errors.append(f"http: {exc}"[:200])
            connection.close()

    def rest(self, samples: int) -> dict[str, Any]:
        """The same pages timed again with the queue drained (the controller otherwise idle)."""
        grpc_before, http_before = len(self.grpc_ms), len(self.http_ms)
        with Client(self.address, timeout=60) as client:
            connection = self._http_connection()
            for _ in range(samples):
                self.sample(client, connection)
        out = {
            "grpc": summary_ms(self.grpc_ms[grpc_before:]),
            **({"http": summary_ms(self.http_ms[http_before:])} if self.http else {}),
        }
        del self.grpc_ms[grpc_before:], self.http_ms[http_before:]  # the draining figures stay apart
        return out

    def finish(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join()
        return {
            "grpc": summary_ms(self.grpc_ms),
            **({"http": summary_ms(self.http_ms)} if self.http else {}),
            **({"errors": self.errors[:5], "error_count": len(self.errors)} if self.errors else {}),
        }


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log that is about to be deleted with its temporary directory."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return str(exc)


def summary_ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0}
    return {
        "samples": len(values),
        "p50": round(percentile(values, 0.5), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


async def submit_all(address: str, spec: dict[str, Any], n: int, batch: int = 1, concurrency: int = 32) -> None:
    """`batch` 1: one SubmitJob per job, `concurrency` at once; more: SubmitJobs calls of `batch` jobs, in turn."""
    async with AsyncClient(address, timeout=120) as client:
        if batch > 1:
            for start in range(0, n, batch):
                await client.submit_many([spec] * min(batch, n - start))
            return
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await client.submit(spec)

        await asyncio.gather(*(one() for _ in range(n)))


async def add_all(address: str, addresses: list[str], concurrency: int = 16) -> None:
    """Add the simulated agents by address, several at once (one by one, adding 200 took ~100 s on 2 cores:
    the queue drained at the pace agents arrived, not at the controller's)."""
    async with AsyncClient(address, timeout=120) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: str) -> None:
            async with gate:
                await client.add_agent(agent)

        await asyncio.gather(*(one(a) for a in addresses))


async def task_state_events(address: str, job_ids: list[str]) -> dict[str, Any]:
    """The task state changes the controller recorded for a sample of ended jobs (their WatchJob events): how
    many per task, to turn completed tasks into state changes."""
    async with AsyncClient(address, timeout=120) as client:
        gate = asyncio.Semaphore(16)

        async def one(job_id: str) -> tuple[int, int, int]:
            async with gate:
                task_states = job_states = 0
                async for event in client.watch(job_id):
                    task_states += event["kind"] == "task_state"
                    job_states += event["kind"] == "job_state"
                tasks = (await client.job(job_id))["tasks"]["total"]
                return task_states, job_states, tasks

        counts = await asyncio.gather(*(one(j) for j in job_ids))
    per_task = [t / max(1, n) for t, _, n in counts]
    return {
        "sampled_jobs": len(counts),
        "task_state_events_per_task": round(statistics.fmean(per_task), 3) if per_task else None,
        "task_state_events_per_task_min": min(per_task, default=None),
        "job_state_events_per_job": round(statistics.fmean(j for _, j, _ in counts), 3) if counts else None,
    }


def start_sims(
    root: Path, agents: int, slots: int, procs: int, nice: int
) -> list[tuple[subprocess.Popen[bytes], Path, Path]]:
    """fake_agents.py processes sharing `agents` between them (the simulated agents use CPU too), at `nice`."""
    sims = []
    procs = max(1, min(procs, agents))
    for p in range(procs):
        count = agents // procs + (1 if p < agents % procs else 0)
        ready, report = root / f"sim{p}.ready", root / f"sim{p}.report"
        argv = [sys.executable, str(ROOT / "benchmarks" / "fake_agents.py"), "--count", str(count)]
        argv += ["--slots", str(slots), "--dir", str(root / f"sim{p}"), "--ready", str(ready)]
        argv += ["--report", str(report), "--prefix", f"sim{p}-", "--nice", str(nice)]
        log = (root / f"sim{p}.log").open("wb")
        env = {**os.environ, "TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN}
        sims.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), ready, report))
    return sims


def run(args: argparse.Namespace) -> dict[str, Any]:
    jobs, agents, seconds, slots = args.jobs, args.agents, args.seconds, args.slots
    with contextlib.ExitStack() as stack:
        if args.keep_dir is not None:  # the logs stay, to read after a surprising run
            root = args.keep_dir
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tensorfleet-scale-")))
        metrics_port = free_port()
        extra = ["--metrics-port", str(metrics_port)]
        http_port = 0 if args.no_http else free_port()
        if http_port:
            extra += ["--http-port", str(http_port)]
        controller = ControllerProcess(root / "controller", extra_args=extra).start()
        sims = start_sims(root, agents, slots, args.sim_procs, args.sim_nice)
        try:
            t0 = time.monotonic()
            addresses: list[str] = []
            for proc, ready, _ in sims:
                while not ready.exists():
                    if proc.poll() is not None:
                        raise RuntimeError(f"simulated agents exited: {tail(ready.with_suffix('.log'))}")
                    time.sleep(0.1)
                addresses += json.loads(ready.read_text())["addresses"]
            agents_start_s = time.monotonic() - t0
            assert controller.proc is not None
            http = (http_port, client_token(controller.address)[0]) if http_port else None
            sampler = Sampler(controller.proc.pid)
            sampler.start()
            spec = {"algorithm": "sleep", "hyperparameters": {"seconds": seconds}, "max_retries": 0}
            t0 = time.monotonic()
            asyncio.run(submit_all(controller.address, spec, jobs, args.submit_batch))
            submit_s = time.monotonic() - t0
            rss_queued_mib = round(psutil.Process(controller.proc.pid).memory_info().rss / 2**20, 1)
            pages = PageTimer(controller.address, http, args.page)
            queued_pages = pages.rest(args.page_samples)  # 10,000 jobs queued, no agent yet
            with Client(controller.address, timeout=60) as client:
                with Profiler(args.profile, {"controller": controller.proc.pid}) as profiler:
                    pages.start()
                    t0 = time.monotonic()
                    asyncio.run(add_all(controller.address, addresses))
                    deadline = t0 + args.timeout
                    while sum(a["state"] == "ONLINE" and a["paired"] for a in client.agents()) < agents:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"agents not online in {args.timeout}s: {tail(controller.log_path)}")
                        time.sleep(0.1)
                    online_s = time.monotonic() - t0
                    while client.jobs(("QUEUED", "RUNNING"), limit=1):
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"queue not drained after {args.timeout}s: {tail(controller.log_path)}")
                        time.sleep(0.25)
                    makespan = time.monotonic() - t0
                    drained_at = time.time()
                    draining_pages = pages.finish()
                rest_pages = pages.rest(args.page_samples)
                newest = client.jobs(limit=min(jobs, 2000))
                unsuccessful = client.jobs(("FAILED", "CANCELLED"))
                last_finished = max((j["finished_at"] or 0.0 for j in newest + unsuccessful), default=0.0)
                sample = [j["id"] for j in newest[:: max(1, len(newest) // args.event_sample)]][: args.event_sample]
            events = asyncio.run(task_state_events(controller.address, sample))
            controller_figures = sampler.finish()
            passes = histogram(f"http://127.0.0.1:{metrics_port}/metrics", "tensorfleet_schedule_pass_seconds")
            times: dict[str, Any] = {}
            for proc, _, report_path in sims:
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
                times.update(json.loads(report_path.read_text()))
        finally:
            for proc, _, _ in sims:
                if proc.poll() is None:
                    proc.kill()
            controller.stop()
    gaps = []
    accepted_all, finished_all = [], []
    for agent_times in times.values():
        accepted, finished = sorted(agent_times["accepted"]), sorted(agent_times["finished"])
        accepted_all += accepted
        finished_all += finished
        for start in accepted[1:]:  # the first task of an agent waited for the agent, not for a slot
            freed = [f for f in finished if f <= start]
            if freed:
                gaps.append((start - freed[-1]) * 1000)
    states = {"SUCCEEDED": jobs - len(unsuccessful)}
    for job in unsuccessful:
        states[job["state"]] = states.get(job["state"], 0) + 1
    first_accepted = min(accepted_all, default=0.0)
    window = (last_finished or drained_at) - first_accepted if first_accepted else makespan
    per_task = events["task_state_events_per_task"] or 0.0
    ideal = jobs * seconds / (agents * slots)
    return {
        "jobs": jobs,
        "agents": agents,
        "slots_per_agent": slots,
        "task_seconds": seconds,
        "simulated_agent_processes": len(sims),
        "simulated_agents_niceness": args.sim_nice,
        "states": states,
        "unsuccessful_examples": [
            {"id": j["id"], "state": j["state"], "error": j["error"][:300], "tasks": j["tasks"]}
            for j in unsuccessful[:3]
        ],
        "placements_per_task_in_newest": round(
            sum(j["tasks"]["attempts"] for j in newest) / max(1, sum(j["tasks"]["total"] for j in newest)), 3
        ),
        "simulated_agents_ready_s": round(agents_start_s, 2),
        "submit_jobs_per_s": round(jobs / submit_s, 1),
        "submit": "SubmitJob per job, 32 at once"
        if args.submit_batch <= 1
        else f"SubmitJobs of {args.submit_batch} jobs (Client.submit_many), one call at a time",
        "agents_added_to_online_s": round(online_s, 2),
        "makespan_s": round(makespan, 2),
        "ideal_makespan_s": round(ideal, 2),
        "drain_window_s": round(window, 2),
        "completed_jobs_per_s": round(jobs / window, 1),
        "task_state_changes": events,
        "task_state_changes_per_s": round(jobs * per_task / window, 1),
        "tasks_run_by_agents": len(finished_all),
        "list_jobs_page_ms": {
            "limit": args.page,
            "queued": queued_pages,
            "draining": draining_pages,
            "drained": rest_pages,
        },
        "slot_refill_ms": {
            "p50": round(percentile(gaps, 0.5), 2),
            "p99": round(percentile(gaps, 0.99), 2),
            "mean": round(statistics.fmean(gaps), 2) if gaps else None,
            "samples": len(gaps),
        },
        "scheduler_pass": passes,
        "controller": {**controller_figures, "rss_with_queue_mib": rss_queued_mib},
        **({"profile": profiler.summary()} if args.profile is not None else {}),
    }


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 21's scale-simulation rows (no Ray figure: Ray has no such simulation)."""
    size = f"{report['jobs']:,} queued jobs on {report['agents']} simulated agents"
    if report["simulated_agents_niceness"] != SIM_NICE:
        size += f" at niceness {report['simulated_agents_niceness']}"
    pages = report["list_jobs_page_ms"]
    rows = [
        row(
            f"scale simulation, {size}: task state changes per second",
            "changes/s",
            report["task_state_changes_per_s"],
            None,
            goal=">= 1,000/s",
            at_least=1000.0,
            on="tensorfleet",
            peer="none (Ray has no such simulation)",
            note=f"{report['completed_jobs_per_s']} jobs/s completed; "
            f"{report['task_state_changes']['task_state_events_per_task']} recorded task state changes per task",
        ),
    ]
    for transport in ("grpc", "http"):
        draining = pages["draining"].get(transport)
        if draining is None:
            continue
        p50 = draining.get("p50")
        worst = max((pages[phase][transport].get("p99") or 0.0) for phase in ("queued", "draining", "drained"))
        rows.append(
            row(
                f"scale simulation, {size}: {'ListJobs' if transport == 'grpc' else 'GET /api/v1/jobs'} page of "
                f"{pages['limit']} while the queue drains (p50)",
                "ms",
                p50,
                None,
                goal="<= 50 ms",
                at_most=50.0,
                on="tensorfleet",
                peer="none (Ray has no such simulation)",
                note=f"p99 {draining.get('p99')} ms; worst p99 over queued / draining / drained: {round(worst, 2)} ms",
            )
        )
    rows.append(
        row(
            f"scale simulation, {size}: controller peak RSS",
            "MiB",
            report["controller"]["peak_rss_mib"],
            None,
            goal="<= 500 MiB",
            at_most=500.0,
            on="tensorfleet",
            peer="none (Ray has no such simulation)",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.1, help="simulated duration of each task")
    parser.add_argument("--slots", type=int, default=1, help="slots per simulated agent")
    parser.add_argument("--sim-procs", type=int, default=2, help="processes the simulated agents share")
    parser.add_argument(
        "--sim-nice", type=int, default=SIM_NICE, help="niceness of the simulated agents (0: equal shares of the CPUs)"
    )
    parser.add_argument(
        "--submit-batch",
        type=int,
        default=1,
        help="queue the jobs N per SubmitJobs call (Client.submit_many); 1 (default): one SubmitJob each, whose "
        "rate the report prints",
    )
    parser.add_argument("--page", type=int, default=50, help="jobs per ListJobs / GET /api/v1/jobs page")
    parser.add_argument("--page-samples", type=int, default=20, help="timed pages with the queue full, drained")
    parser.add_argument("--event-sample", type=int, default=100, help="jobs whose task state events are counted")
    parser.add_argument("--timeout", type=float, default=600, help="give up when the queue has not drained")
    parser.add_argument("--keep-dir", type=Path, help="run in this folder and keep it (logs, journals)")
    parser.add_argument("--no-http", action="store_true", help="no --http-port: time the gRPC ListJobs only")
    parser.add_argument("--profile", type=Path, help="sample the controller with py-spy; raw stacks go here")
    args = parser.parse_args()
    if not 1 <= args.submit_batch <= 1000:
        parser.error("--submit-batch must be between 1 and 1000 (the controller's SubmitJobs limit)")
    load_before = load()
    report = run(args)
    out = {"load_before": load_before, "load_after": load(), "scale_simulation": report, "targets": targets(report)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
