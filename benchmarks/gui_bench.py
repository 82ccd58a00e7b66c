#!/usr/bin/env python3
"""The job detail's responsiveness, as JSON: the new path (JobBatches) beside the old one (a Qt signal and a plot
append per WatchJob message, the code of commit e998b0b) on the same cluster in the same run (issue 22 item 5).

A controller and one simulated agent start on loopback. The agent is the real daemon (its RPC service, journal and
event stream to the controller: the path every task's points take) whose executor, instead of starting a worker,
writes each task's points into the journal at once: a sweep trial (random_forest on iris) reports 200-500 steps of
train_loss, test_loss and test_accuracy, an `emit` task its `points` points at its `rate`. So the history is built
in seconds, where 200 real trials cannot report hundreds of points each. Through the public API the bench submits
a 200-trial sweep, a 100k-point `emit` job and 20 jobs of 5,000 points, and waits for them. Then each path runs in
a fresh process of its own (offscreen Qt, the job detail view and its bridge, no main window), which measures:

- open_sweep / open_100k: from open_job until every point is in the curves and the job is shown; `blocked_ms` is
  the event loop's total blocking: the sum of a 5 ms QTimer's lateness over every gap longer than 16 ms (goal
  <= 100 ms); also the longest stall, the wall time and the GUI thread's CPU time, and `cpu_blocked_ms`: the same
  sum counting the GUI thread's own CPU time in each gap instead of the gap (a gap the scheduler made, the thread
  waiting for a core on a busy machine, adds nothing to it: what the app costs, where blocked_ms is what a user
  of that machine saw);
- stream_cpu: the GUI thread's CPU (time.thread_time in that thread) over 4 s while a job streams 1,000 points/s
  (goal <= 15 % of a core);
- memory: RSS after opening each of the 20 jobs in turn (each open lets go of the one before), ratio of the last
  to the first (goal <= 1.2);
- idle_blocked_ms_per_s: the same timer's blocking per second with nothing to do (the machine's own noise: on a
  busy box stalls come from the scheduler too).

Usage: python benchmarks/gui_bench.py [--trials 200] [--points 100000] [--profile]

--profile (a scratch run, for finding what blocks): only the new path is measured, and while the sweep opens a
thread samples the GUI thread's Python stack every 0.5 ms; the samples inside stalls are summed per function
(self time and inclusive) and per event-loop callback, and printed to stderr beside the JSON.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
os.environ["TENSORFLEET_MDNS_INTERFACES"] = "127.0.0.1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

OLD_COMMIT = "e998b0b"  # the last commit with the per-event path
GOALS = {"blocked_ms": 100.0, "stream_cpu_percent": 15.0, "memory_ratio": 1.2}
STREAM_POINTS, STREAM_RATE = 7000, 1000.0
IDLE_SECONDS = 3.0


# ---------------------------------------------------------------- the cluster and its jobs (parent process)


def build_jobs(address: str, trials: int, points: int) -> dict[str, Any]:
    from tensorfleet_desktop.client import Client

    with Client(address) as client:
        sweep = client.submit(
            {
                "algorithm": "random_forest",
                "dataset": "iris",
                "name": "bench-sweep",
                "sweep": {
                    "params": {"n_estimators": "int:10:500", "max_depth": "int:2:30"},
                    "search": "random",
                    "trials": trials,
                    "metric": "test_accuracy",
                    "direction": "maximize",
                },
            }
        )
        big = client.submit(
            {"algorithm": "emit", "name": "bench-100k", "hyperparameters": {"points": points, "name": "loss"}}
        )
        small = [
            client.submit({"algorithm": "emit", "name": f"bench-mem-{i}", "hyperparameters": {"points": 5000}})
            for i in range(20)
        ]
        for job in (sweep, big, *small):
            done = client.wait(job["id"], timeout=600)
            if done["state"] != "SUCCEEDED":
                raise SystemExit(f"{done['name']} {done['state']}: {done['error']}")
        sweep_points = sum(len(e.get("points", ())) for e in client.watch(sweep["id"]))
        trials_done = client.job(sweep["id"])["tasks"]["total"]
    return {
        "sweep": sweep["id"],
        "sweep_points": sweep_points,
        "sweep_trials": trials_done,
        "big": big["id"],
        "big_points": points,
        "small": [j["id"] for j in small],
    }


def run_cluster_and_measure(args: argparse.Namespace) -> dict[str, Any]:
    from helpers.agents import CLUSTER_TOKEN
    from helpers.controller import ControllerProcess
    from helpers.waiting import wait_until
    from tensorfleet_desktop.client import Client

    with tempfile.TemporaryDirectory(prefix="gui-bench-") as tmp:
        root = Path(tmp)
        ready = root / "agent.ready"
        agent = subprocess.Popen(
            [sys.executable, __file__, "--simulated-agent", str(root / "agent"), "--ready", str(ready)],
            env={**os.environ, "TENSORFLEET_CLUSTER_TOKEN": CLUSTER_TOKEN},
        )
        controller = ControllerProcess(root / "controller", extra_args=["--no-mdns"])
        try:
            controller.start()
            wait_until(ready.exists, 30, "the simulated agent")
            with Client(controller.address) as client:
                client.add_agent(json.loads(ready.read_text())["address"])
                wait_until(lambda: any(a["state"] == "ONLINE" for a in client.agents()), 30, "the simulated agent")
            t0 = time.perf_counter()
            jobs = build_jobs(controller.address, args.trials, args.points)
            setup_s = time.perf_counter() - t0
            results: dict[str, Any] = {}
            for variant in ("after",) if args.profile else ("before", "after"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--measure",
                        variant,
                        "--address",
                        controller.address,
                        "--jobs",
                        json.dumps(jobs),
                        *(["--profile"] if args.profile else []),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                if out.returncode != 0:
                    raise SystemExit(f"{variant} failed:\n{out.stderr[-4000:]}")
                results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
                if args.profile:
                    print(out.stderr, file=sys.stderr)
        finally:
            controller.stop()
            agent.terminate()
            agent.wait(30)
    after = results["after"]
    results.setdefault("before", {})
    checks = {
        "open_sweep_blocked_ms": after["open_sweep"]["blocked_ms"] <= GOALS["blocked_ms"],
        "open_100k_blocked_ms": after["open_100k"]["blocked_ms"] <= GOALS["blocked_ms"],
        "stream_cpu_percent": after["stream_cpu"]["cpu_percent"] <= GOALS["stream_cpu_percent"],
        "memory_ratio": after["memory"]["ratio"] <= GOALS["memory_ratio"],
    }
    return {
        "jobs": {k: v for k, v in jobs.items() if k != "small"} | {"memory_jobs": 20, "setup_s": round(setup_s, 1)},
        "goals": GOALS,
        "before": results["before"],
        "after": after,
        "pass": checks,
        "all_pass": all(checks.values()),
    }


# ---------------------------------------------------------------- the simulated agent (child process)


def simulated_agent(data_dir: Path, ready: Path) -> None:
    """The real agent daemon; its executor writes each task's points into the journal instead of running it."""
    import asyncio
    import random
    import signal

    from tensorfleet_agent import daemon as daemon_module
    from tensorfleet_agent.core.types import ExitCause, Finished, MetricPoint, Progress, StateChanged, TaskState
    from tensorfleet_agent.runtime.executor import Executor, _Running

    class PointsExecutor(Executor):
        async def _run(self, running: _Running) -> None:
            spec = running.spec
            try:
                self._append(running, StateChanged(TaskState.RUNNING, "simulated worker"))
                if spec.workload == "emit":
                    points, rate = int(spec.params.get("points", 100)), float(spec.params.get("rate", 0.0))
                    name = str(spec.params.get("name", "value"))
                    start = time.time()
                    for step in range(points):
                        if rate > 0 and step % 50 == 0:  # the SDK sends what a task reports in small bunches
                            await asyncio.sleep(max(0.0, start + step / rate - time.time()))
                        elif step % 1000 == 0:  # the daemon's loop also answers the controller
                            await asyncio.sleep(0)
                        self._append(running, MetricPoint(step, name, float(step), time.time()))
                    self._append(running, Progress(1.0))
                else:  # a sweep trial: a few hundred epochs of three metrics
                    rng = random.Random(spec.task_id)
                    for step in range(rng.randint(200, 500)):
                        if step % 300 == 0:
                            await asyncio.sleep(0)
                        now = time.time()
                        loss = 1.0 / (1 + step) + rng.random() * 0.01
                        self._append(running, MetricPoint(step, "train_loss", loss, now))
                        self._append(running, MetricPoint(step, "test_loss", loss * 1.1, now))
                        self._append(running, MetricPoint(step, "test_accuracy", 1 - loss, now))
                    self._append(running, Progress(1.0))
                status, cause, error = TaskState.SUCCEEDED, ExitCause.COMPLETED, ""
            except asyncio.CancelledError:
                status, cause, error = TaskState.CANCELLED, running.kill_cause, running.kill_message
            finally:
                self.journal.append(spec.task_id, Finished(status, cause, error, time.monotonic() - running.started))
                self._running.pop(spec.task_id, None)
                self.slots.release(running.slots)
                self.blobs.unpin(ref.sha256 for ref in spec.inputs)
                self._gauge()

    async def run() -> None:
        daemon_module.Executor = PointsExecutor  # type: ignore[misc]
        config = daemon_module.AgentConfig(
            data_dir=data_dir,
            host="127.0.0.1",
            port=0,
            name="gui-bench-agent",
            interfaces=["127.0.0.1"],
            advertise=False,
            cpu_slots=8,
            spare_workers=0,
            cluster_token=os.environ["TENSORFLEET_CLUSTER_TOKEN"],
        )
        agent = daemon_module.AgentDaemon(config)
        await agent.start()
        ready.write_bytes(json.dumps({"address": f"127.0.0.1:{agent.port}"}).encode())  # noqa: ASYNC240
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await agent.stop(drain=False)

    asyncio.run(run())


# ---------------------------------------------------------------- one path, measured (child process)


def old_modules() -> tuple[type, type]:
    """The per-event bridge and job detail as they were at OLD_COMMIT, loaded beside the current package (their
    other imports, e.g. the curves panel, resolve to the current code: only the delivery path differs)."""

    def load(name: str, path: str) -> ModuleType:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        exec(compile(source, f"{OLD_COMMIT}:{path}", "exec"), module.__dict__)
        return module

    bridge = load("tensorfleet_desktop.ui._old_bridge", "tensorfleet_desktop/ui/bridge.py")
    detail = load("tensorfleet_desktop.ui._old_job_detail", "tensorfleet_desktop/ui/job_detail.py")
    return bridge.Bridge, detail.JobDetailView


class Stalls:
    """A 5 ms timer on the GUI thread: each gap over 16 ms is a stall; its lateness adds to `blocked`, and the GUI
    thread's CPU time in a gap, where over 16 ms, less 5 ms to `cpu_blocked` (the app's share of the stalls)."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.blocked = self.longest = self.cpu_blocked = 0.0
        self.stalls = 0
        self.last = self.cpu_last = 0.0
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each stall, perf_counter seconds

    def start(self) -> None:
        self.blocked = self.longest = self.cpu_blocked = 0.0
        self.stalls = 0
        self.intervals = []
        self.last, self.cpu_last = time.perf_counter(), time.thread_time()
        self.timer.start()

    def _tick(self) -> None:
        now, cpu_now = time.perf_counter(), time.thread_time()
        gap, self.last = now - self.last, now
        cpu, self.cpu_last = cpu_now - self.cpu_last, cpu_now
        if gap > 0.016:
            self.stalls += 1
            self.intervals.append((now - gap, now))
            self.blocked += gap - 0.005
            self.longest = max(self.longest, gap)
            if cpu > 0.016:
                self.cpu_blocked += cpu - 0.005

    def stop(self) -> None:
        self._tick()
        self.timer.stop()


class StackSampler:
    """Samples the GUI thread's Python stack from a thread of its own; `report` sums the samples that fall inside
    the stalls a Stalls timer saw (each sample weighted by the time since the one before it)."""

    def __init__(self) -> None:
        import threading

        self.thread_id = threading.get_ident()
        self.samples: list[tuple[float, float, tuple[str, ...]]] = []  # (time, weight, stack innermost first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        sys.setswitchinterval(0.0005)  # or the sampler waits 5 ms for the GIL
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(0.005)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.0005)
            frame = sys._current_frames().get(self.thread_id)
            now = time.perf_counter()
            stack: list[str] = []
            while frame is not None and len(stack) < 40:
                code = frame.f_code
                stack.append(f"{Path(code.co_filename).name}:{code.co_name}")
                frame = frame.f_back
            self.samples.append((now, now - last, tuple(stack)))
            last = now

    def report(self, stalls: list[tuple[float, float]], origin: float, top: int = 30) -> str:
        from collections import defaultdict

        timeline = []
        for start, end in stalls:
            inside: defaultdict[str, float] = defaultdict(float)
            for at, weight, stack in self.samples:
                if start <= at - weight / 2 <= end:
                    outer = [n for n in stack if not n.startswith(("gui_bench.py", "threading.py"))]
                    inside[" < ".join(outer[-2:][::-1]) if outer else "(event loop)"] += weight
            what = ", ".join(f"{name} {ms * 1000:.0f}" for name, ms in _most(inside, 3))
            timeline.append(f"  at {(start - origin) * 1000:7.0f} ms: {(end - start) * 1000:5.1f} ms  {what}")

        own: defaultdict[str, float] = defaultdict(float)
        inclusive: defaultdict[str, float] = defaultdict(float)
        callbacks: defaultdict[str, float] = defaultdict(float)
        total = 0.0
        for at, weight, stack in self.samples:
            if not stack or not any(start <= at - weight / 2 <= end for start, end in stalls):
                continue
            total += weight
            own[stack[0]] += weight
            for name in set(stack):
                inclusive[name] += weight
            # the outermost frame below the event loop's pump: the callback Qt called
            outer = [n for n in stack if not n.startswith(("gui_bench.py", "threading.py"))]
            callbacks[" < ".join(outer[-3:][::-1]) if outer else "(event loop)"] += weight
        lines = [f"sampled in stalls: {total * 1000:.1f} ms over {len(stalls)} stalls", *timeline]
        for title, counter in (("callbacks", callbacks), ("self", own), ("inclusive", inclusive)):
            lines.append(f"-- {title}")
            lines += [f"{ms * 1000:8.1f} ms  {name}" for name, ms in _most(counter, top)]
        return "\n".join(lines)


def _most(totals: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(totals.items(), key=lambda kv: -kv[1])[:n]


def pump(until: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the Qt event loop (as the app does) until `until()` holds."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    check = QTimer()
    check.setInterval(10)
    deadline = time.monotonic() + timeout

    def poll() -> None:
        if until() or time.monotonic() > deadline:
            loop.quit()

    check.timeout.connect(poll)
    check.start()
    loop.exec()
    check.stop()
    if not until():
        raise TimeoutError(f"{what} not within {timeout} s")


def settle(seconds: float) -> None:
    end = time.monotonic() + seconds
    pump(lambda: time.monotonic() >= end, seconds + 1, "settle")


def rss_mb() -> float:
    import psutil
    from PySide6.QtCore import QCoreApplication, QEvent

    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


def measure(variant: str, address: str, jobs: dict[str, Any], profile: bool = False) -> dict[str, Any]:
    from PySide6.QtCore import QTimer

    from tensorfleet_desktop.client import TERMINAL, Client
    from tensorfleet_desktop.ui.app import create_application

    app = create_application()
    if variant == "before":
        bridge_class, detail_class = old_modules()
    else:
        from tensorfleet_desktop.ui.bridge import Bridge
        from tensorfleet_desktop.ui.job_detail import JobDetailView

        bridge_class, detail_class = Bridge, JobDetailView
    bridge = bridge_class(address, autostart=False)
    detail = detail_class(bridge, lambda _message, _error: None)
    detail.resize(1280, 800)
    detail.show()
    bridge.start()
    pump(lambda: bridge.online and bool(detail.known_jobs), 30, "the controller's job list")
    stalls = Stalls()

    def loaded(points: int) -> Callable[[], bool]:
        return lambda: detail.metric_points >= points and detail.job is not None and detail.job["state"] in TERMINAL

    def open_and_measure(job_id: str, points: int, sample: bool = False) -> dict[str, Any]:
        rss0 = rss_mb()
        sampler = StackSampler() if sample else None
        if sampler is not None:
            sampler.start()
        stalls.start()
        cpu0, t0 = time.thread_time(), time.perf_counter()
        QTimer.singleShot(0, lambda: detail.open_job(job_id))  # inside the measured loop, as a click would be
        pump(loaded(points), 300, f"job {job_id} loaded")
        wall = time.perf_counter() - t0
        settle(0.5)  # the plots' next flushes
        stalls.stop()
        cpu = time.thread_time() - cpu0
        if sampler is not None:
            sampler.stop()
            print(sampler.report(stalls.intervals, t0), file=sys.stderr)
        return {
            "points": detail.metric_points,
            "blocked_ms": round(stalls.blocked * 1000, 1),
            "cpu_blocked_ms": round(stalls.cpu_blocked * 1000, 1),
            "longest_stall_ms": round(stalls.longest * 1000, 1),
            "stalls_over_16ms": stalls.stalls,
            "load_s": round(wall, 2),
            "gui_cpu_s": round(cpu, 2),
            "rss_growth_mb": round(rss_mb() - rss0, 1),
        }

    result: dict[str, Any] = {"variant": variant, "rss_start_mb": round(rss_mb(), 1)}
    stalls.start()  # the machine's own noise: the same timer with nothing to do
    settle(IDLE_SECONDS)
    stalls.stop()
    result["idle_blocked_ms_per_s"] = round(stalls.blocked * 1000 / IDLE_SECONDS, 1)
    result["idle_cpu_blocked_ms_per_s"] = round(stalls.cpu_blocked * 1000 / IDLE_SECONDS, 1)
    # memory: 20 jobs opened one after another
    rss = []
    for job_id in jobs["small"]:
        detail.open_job(job_id)
        pump(loaded(5000), 60, f"job {job_id}")
        settle(0.2)
        rss.append(rss_mb())
    result["memory"] = {
        "rss_after_first_mb": round(rss[0], 1),
        "rss_after_20_mb": round(rss[-1], 1),
        "ratio": round(rss[-1] / rss[0], 3),
    }
    result["open_sweep"] = open_and_measure(jobs["sweep"], jobs["sweep_points"], sample=profile)
    result["open_100k"] = open_and_measure(jobs["big"], jobs["big_points"])

    # 1,000 points/s streaming into the open job
    with Client(address) as client:
        job = client.submit(
            {
                "algorithm": "emit",
                "name": f"bench-stream-{variant}",
                "hyperparameters": {"points": STREAM_POINTS, "rate": STREAM_RATE, "name": "loss"},
            }
        )
    detail.open_job(job["id"])
    pump(lambda: detail.metric_points >= 500, 60, "the streaming job's first points")
    settle(0.5)
    n0, cpu0, t0 = detail.metric_points, time.thread_time(), time.perf_counter()
    settle(4.0)
    cpu, wall, n = time.thread_time() - cpu0, time.perf_counter() - t0, detail.metric_points - n0
    result["stream_cpu"] = {
        "cpu_percent": round(100 * cpu / wall, 1),
        "points_per_s": round(n / wall),
    }
    pump(loaded(STREAM_POINTS), 60, "the streaming job's end")

    detail.close()
    bridge.stop()
    app.processEvents()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="sample the GUI thread while the sweep opens")
    parser.add_argument("--measure", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--simulated-agent", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulated_agent:
        simulated_agent(args.simulated_agent, args.ready)
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.address, json.loads(args.jobs), args.profile)))
        return
    print(json.dumps(run_cluster_and_measure(args), indent=2))


if __name__ == "__main__":
    main()
