#!/usr/bin/env python3
"""Team simulation (issue 24): 5 users, 1,000 mixed jobs on 20 simulated GPU agents, the real controller core, JSON.

The controller is the real core (`Controller`: store, job machine, placement loop, scheduler, attempts, ingest; fair
share, quotas, preemption and GPU sharing as the scheduler has them), in this process, over the in-process fake
AgentPort of the core tests (tests/helpers/fake_agents.py) extended with GPUs, and on its FakeClock: time is
simulated, so four hours of a team's work take a minute or two. The simulated agents play the tasks: a task runs for
its planned work, checkpoints every `checkpoint_every` simulated seconds (CheckpointSaved events the controller
copies, as from a real agent), resumes from the checkpoint the controller sends it (`resume.ckpt`), and stops
STOP_SECONDS after it is asked (within its grace) without saving another: the pessimistic case of a workload that
saves only on its period, so a preempted task loses the work since its last checkpoint (all of it without one).

The loop: the next event (a submit, a task's end or checkpoint, a stop) sets the clock; the controller reacts
(placement pass, dispatches, ingest) until it is quiet; then time moves on. At least every MAX_STEP simulated seconds
the clock moves, so per-tick work (timeouts, demand, preemption) runs as in a live controller.

Reported per user: GPU-seconds used, their share of the GPU-seconds against their fair share, mean / p95 / max queue
wait (submit to first start), preemptions suffered and the GPU-seconds they lost. Fair share is defined as max-min
fair among users with demand: at every moment the cluster's GPUs are split equally among the users who have work
(queued or running), a user wanting less than an equal split getting what they want and the rest split among the
others (a user's quota caps what they may be entitled to). Shares are integrated over the contended time only (more
demand than GPUs): over a whole run every user's work gets done whatever the order, so only what they got while
they competed tells fair from unfair. `distance_from_fair_share` is, at each contended moment, half the summed
|share - fair share| over users (0: all fair, 1: all unfair), averaged over that time. The same workload runs once per
variant, so the effect shows side by side: `fair` is the scheduler as shipped (fair share, quotas, preemption, GPU
sharing); `fifo` the same with `[scheduler] fair_share = false`, so equal priorities go by submit order as
before issue 24 (quotas, preemption and sharing unchanged).

Usage: python benchmarks/team_sim.py [--seed 1] [--variants fair,fifo] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from helpers.core_harness import core  # noqa: E402
from helpers.fake_agents import FakeAgent, FakeAgents, FakeClock  # noqa: E402
from tensorfleet_agent.core.types import CheckpointSaved, ExitCause, TaskSpec, TaskState  # noqa: E402
from tensorfleet_desktop.controller.core import Controller  # noqa: E402
from tensorfleet_desktop.controller.errors import AgentBusy  # noqa: E402
from tensorfleet_desktop.controller.gpu_share import gpu_amount  # noqa: E402
from tensorfleet_desktop.controller.model import TaskRunState  # noqa: E402
from tensorfleet_desktop.controller.ports import AgentView, GpuView  # noqa: E402

GIB = 1 << 30
MAX_STEP = 30.0  # simulated seconds between two placement passes at most (a live controller ticks every 0.5 s)
STOP_SECONDS = 5.0  # a task asked to stop (pause, preemption) ends this long after (its grace allowing)
SETTLE_LIMIT = 60.0  # real seconds the controller may take to react to one step before the run is called stuck


#: (controller, variant, quotas by user) -> the team features switched on
Configure = Callable[[Controller, str, dict[str, dict[str, int]]], list[str]]


# ---- the workload


@dataclass(frozen=True)
class PlannedJob:
    """One job of the workload: who submits it when, its spec, and how much work each of its tasks is."""

    user: str
    submit_at: float  # simulated seconds from the start
    spec: dict[str, Any]
    work: float  # seconds each task runs when never stopped
    checkpoint_every: float = 0.0  # 0: it never checkpoints (preempted, it starts over)


@dataclass(frozen=True)
class Cluster:
    agents: int = 20
    gpus_per_agent: int = 2
    gpu_memory: int = 24 * GIB

    @property
    def gpus(self) -> int:
        return self.agents * self.gpus_per_agent


def team_workload(rng: random.Random, scale: float = 1.0) -> tuple[list[PlannedJob], dict[str, dict[str, int]]]:
    """The issue's team: 1,000 jobs (at scale 1) from 5 users of different demand, and the quotas set for them.

    - alice floods 500 short trials (3-9 min, 1 GPU) in the first 10 minutes: preemptible, restart from scratch;
    - bob submits 8 long gangs (4 ranks x 1 GPU, 45-90 min, priority 10), one every 25 minutes, checkpointing;
    - carol runs 200 jobs sharing GPUs by memory (8 GiB of a 24 GiB GPU, 10-30 min) over the first hour;
    - dave runs 152 checkpointing jobs (5-15 min, 1 GPU, preemptible) in the first 30 minutes, under a quota of 8 GPUs;
    - erin, the light user, submits 140 small jobs (2-6 min, 1 GPU) steadily over three hours.
    """

    def n(count: int) -> int:
        return max(1, round(count * scale))

    minute = 60.0
    jobs: list[PlannedJob] = []
    for i in range(n(500)):
        spec = _spec(f"alice-trial-{i}", gpus=1, preemptible=True, allow_restart=True)
        jobs.append(PlannedJob("alice", rng.uniform(0, 10 * minute), spec, rng.uniform(3, 9) * minute))
    for i in range(n(8)):
        spec = _spec(f"bob-gang-{i}", gpus=1, num_workers=4, priority=10)
        work = rng.uniform(45, 90) * minute
        jobs.append(PlannedJob("bob", (20 + 25 * i) * minute, spec, work, checkpoint_every=10 * minute))
    for i in range(n(200)):
        spec = _spec(f"carol-shared-{i}", gpus=1, gpu_memory=8 * GIB)
        jobs.append(PlannedJob("carol", rng.uniform(0, 60 * minute), spec, rng.uniform(10, 30) * minute))
    for i in range(n(152)):
        spec = _spec(f"dave-run-{i}", gpus=1, preemptible=True)
        work = rng.uniform(5, 15) * minute
        jobs.append(PlannedJob("dave", rng.uniform(0, 30 * minute), spec, work, checkpoint_every=4 * minute))
    erin = n(140)
    for i in range(erin):
        spec = _spec(f"erin-{i}", gpus=1)
        jobs.append(PlannedJob("erin", (i + rng.random()) * 180 * minute / erin, spec, rng.uniform(2, 6) * minute))
    return sorted(jobs, key=lambda j: j.submit_at), {"dave": {"gpus": 8}}


def small_workload(rng: random.Random) -> tuple[list[PlannedJob], dict[str, dict[str, int]]]:
    """The unit test's: on 4 one-GPU agents, a flood of 34 preemptible trials at once, a light user's 5 jobs arriving
    while the flood is queued, and one high-priority job in the middle (40 jobs)."""
    minute = 60.0
    jobs = [
        PlannedJob("alice", 0.0, _spec(f"trial-{i}", gpus=1, preemptible=True, allow_restart=True), 5 * minute)
        for i in range(34)
    ]
    for i in range(5):
        jobs.append(PlannedJob("erin", (2 + 6 * i) * minute + rng.random(), _spec(f"erin-{i}", gpus=1), 3 * minute))
    urgent = _spec("urgent", gpus=1, priority=10)
    jobs.append(PlannedJob("bob", 7 * minute, urgent, 10 * minute, checkpoint_every=2 * minute))
    return sorted(jobs, key=lambda j: j.submit_at), {}


def _spec(name: str, **fields: Any) -> dict[str, Any]:
    """A checkpointing torch job (the workload kind the controller resumes from a checkpoint); no retries, so a failure
    shows as one."""
    return {"name": name, "algorithm": "torch_mlp", "dataset": "iris", "max_retries": 0, **fields}


# ---- the simulated agents


@dataclass
class SimTask:
    """One attempt as its simulated agent plays it."""

    attempt: str
    job_id: str
    rank: int
    node_id: str
    amount: float  # GPUs it holds (a share of one for a shared task)
    started: float
    done_at_start: float  # work already done when it started (from the checkpoint it resumed)
    work: float
    checkpoint_every: float
    ended: float = 0.0
    stop_at: float = 0.0  # asked to stop: it ends then

    def done(self, now: float) -> float:
        return min(self.work, self.done_at_start + max(0.0, now - self.started))

    def checkpointed(self, now: float) -> float:
        """Work saved in its newest checkpoint by `now` (what a resume continues from)."""
        if not self.checkpoint_every:
            return 0.0
        saved = self.done_at_start + self.checkpoint_every * int((now - self.started) / self.checkpoint_every)
        return min(saved, self.done(now))


@dataclass
class SimGpu:
    """One GPU of a simulated agent: held whole by one attempt, or shared by attempts each promised some memory."""

    index: int
    whole: str = ""  # the attempt holding it whole
    shares: dict[str, int] = field(default_factory=dict)  # attempt -> bytes promised


class SimAgents(FakeAgents):
    """The core tests' fake AgentPort with GPUs, playing each task on the simulated clock (events via Simulation)."""

    def __init__(self, clock: FakeClock, cluster: Cluster, sim: Simulation) -> None:
        super().__init__()
        self.clock, self.cluster, self.sim = clock, cluster, sim
        self.contents: dict[str, bytes] = {}  # checkpoint sha256 -> its bytes (what get_blob copies)
        self.progress: dict[str, float] = {}  # checkpoint sha256 -> the work it holds
        self.gpus: dict[str, list[SimGpu]] = {}  # node id -> its GPUs
        self.on_gpus: dict[str, list[SimGpu]] = {}  # attempt -> the GPUs it uses
        self.most_sharing = 0  # the most tasks that shared one GPU at once

    def add_gpu_agent(self, node_id: str) -> FakeAgent:
        self.gpus[node_id] = [SimGpu(i) for i in range(self.cluster.gpus_per_agent)]
        return self.add(node_id, slots=self.cluster.gpus_per_agent, gpu="sim")

    def _view(self, a: FakeAgent) -> AgentView:
        """Its GPUs as an agent's telemetry reports them, always current (a real agent's lag at most a second)."""
        view = super()._view(a)
        gpus = tuple(self._gpu_view(g) for g in self.gpus.get(a.node_id, ()))
        free = sum(g.total_memory - g.used_memory for g in gpus)
        return dataclasses.replace(view, gpu_slots=len(gpus), gpus=gpus, gpu_free_memory=free)

    def _gpu_view(self, gpu: SimGpu) -> GpuView:
        total, promised = self.cluster.gpu_memory, sum(gpu.shares.values())
        used = total if gpu.whole else promised  # a whole-GPU task may use it all; a share uses its promise
        return GpuView(gpu.index, total, used, promised, len(gpu.shares), exclusive=bool(gpu.whole))

    async def run_task(self, node_id: str, spec: TaskSpec) -> None:
        """As the agent: a share goes best-fit onto the fullest GPU its promise fits on, never beside a whole-GPU
        task; whole GPUs are ones nothing uses. No room: refused as busy (the controller places it again later)."""
        gpus = self.gpus.get(node_id, [])
        total = self.cluster.gpu_memory
        if spec.gpu_memory_bytes > 0:
            fits = [g for g in gpus if not g.whole and total - sum(g.shares.values()) >= spec.gpu_memory_bytes]
            if not fits:
                self._refuse(node_id, spec, f"no GPU has {spec.gpu_memory_bytes} bytes free for a share")
            chosen = [max(fits, key=lambda g: (sum(g.shares.values()), -g.index))]
        else:
            chosen = [g for g in gpus if not g.whole and not g.shares][: spec.gpus]
            if len(chosen) < spec.gpus:
                self._refuse(node_id, spec, f"{spec.gpus} GPU(s) asked, {len(chosen)} free")
        await super().run_task(node_id, spec)
        for gpu in chosen:
            if spec.gpu_memory_bytes > 0:
                gpu.shares[spec.task_id] = spec.gpu_memory_bytes
            else:
                gpu.whole = spec.task_id
        self.on_gpus[spec.task_id] = chosen
        self.most_sharing = max(self.most_sharing, max((len(g.shares) for g in chosen), default=0))
        amount = spec.gpu_memory_bytes / total if spec.gpu_memory_bytes > 0 else float(spec.gpus)
        resumed = next((self.progress.get(i.sha256, 0.0) for i in spec.inputs if i.name == "resume.ckpt"), 0.0)
        self.sim.started(spec, node_id, resumed, amount)

    def _refuse(self, node_id: str, spec: TaskSpec, why: str) -> NoReturn:
        self.calls.append(("refused", node_id, spec.task_id))
        self._notify()
        raise AgentBusy(why)

    def ended(self, attempt: str) -> None:
        """The attempt's process is gone: its GPUs are free again."""
        for gpu in self.on_gpus.pop(attempt, []):
            gpu.shares.pop(attempt, None)
            if gpu.whole == attempt:
                gpu.whole = ""

    async def cancel_task(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float = 0.0) -> None:
        """A stop with a grace (pause) ends STOP_SECONDS later, as a workload saving nothing more; without one, now."""
        agent = self._online(node_id)
        self.calls.append(("cancel", node_id, attempt))
        task = agent.tasks.get(attempt)
        if task is not None and not task.ended and not task.cancelled:
            task.cancelled, task.checkpoint_grace = reason, checkpoint_grace
            self.sim.stop(attempt, min(checkpoint_grace, STOP_SECONDS), ExitCause.CANCELLED, reason)
        self._notify()

    async def preempt(self, node_id: str, attempt: str, reason: str, checkpoint_grace: float) -> None:
        """CancelTask(preempt=True): the task ends PREEMPTED within its grace; the controller queues it again."""
        agent = self._online(node_id)
        self.calls.append(("preempt", node_id, attempt))
        self.preempted[attempt] = (reason, checkpoint_grace)
        task = agent.tasks.get(attempt)
        if task is not None and not task.ended and not task.cancelled:
            task.cancelled, task.checkpoint_grace = reason, checkpoint_grace
            self.sim.stop(attempt, min(checkpoint_grace, STOP_SECONDS), ExitCause.PREEMPTED, reason, preempted=True)
        self._notify()

    def checkpoint(self, attempt: str, work: float) -> None:
        """The attempt saves a checkpoint holding `work` seconds of progress (the controller copies it)."""
        content = f"{attempt}:{work:.3f}".encode()
        sha = hashlib.sha256(content).hexdigest()
        self.contents[sha], self.progress[sha] = content, work
        node = self.sim.tasks[attempt].node_id
        self.fleet[node].blobs.add(sha)
        self.send(attempt, CheckpointSaved(sha, len(content), int(work), "ckpt"))

    async def get_blob(self, node_id: str, sha256: str, dest: Path) -> None:
        self._online(node_id)
        await asyncio.to_thread(dest.write_bytes, self.contents[sha256])


# ---- the simulation


@dataclass
class UserFigures:
    used: float = 0.0  # GPU-seconds, the whole run
    contended_used: float = 0.0  # GPU-seconds while the cluster was contended (more demand than GPUs)
    entitled: float = 0.0  # GPU-seconds of their max-min fair share, while contended
    waits: list[float] = field(default_factory=list)
    preemptions: int = 0
    lost: float = 0.0  # GPU-seconds of work lost to preemption


class Simulation:
    """Drives one run: submits the workload at its times, plays the tasks, measures."""

    def __init__(self, jobs: list[PlannedJob], quotas: dict[str, dict[str, int]], cluster: Cluster) -> None:
        self.plan, self.quotas, self.cluster = jobs, quotas, cluster
        self.clock = FakeClock()
        self.t0 = self.clock.now
        self.agents = SimAgents(self.clock, cluster, self)
        self.tasks: dict[str, SimTask] = {}  # attempt -> its task (live and ended)
        self.live: set[str] = set()
        self.jobs: dict[str, PlannedJob] = {}  # controller job id -> its plan
        self.submitted: dict[str, float] = {}
        self.first_start: dict[str, float] = {}
        self.users = {j.user: UserFigures() for j in jobs}
        self.events: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._activity = 0  # bumped on every call and event: settle() waits until it stops moving
        self.controller: Controller | None = None
        self.preempt_requests = 0
        self.contended = 0.0  # simulated seconds with more demand than GPUs
        self.distance = 0.0  # integral of the distance from fair share over them
        self.stops = 0

    # -- events

    def at(self, when: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.events, (when, self._seq, kind, payload))

    def started(self, spec: TaskSpec, node_id: str, resumed: float, amount: float) -> None:
        """The attempt runs on `node_id`, holding `amount` GPUs, from `resumed` seconds of work done."""
        plan = self.jobs[spec.job_id]
        now = self.clock.now
        task = SimTask(spec.task_id, spec.job_id, spec.rank, node_id, amount, now, resumed, plan.work, 0.0)
        task.checkpoint_every = plan.checkpoint_every
        self.tasks[spec.task_id] = task
        self.live.add(spec.task_id)
        self.first_start.setdefault(spec.job_id, now)
        self._activity += 1
        self.at(now + (plan.work - resumed), "finish", spec.task_id)
        if plan.checkpoint_every:
            self.at(now + plan.checkpoint_every, "checkpoint", spec.task_id)

    def stop(self, attempt: str, after: float, cause: str, reason: str, preempted: bool = False) -> None:
        task = self.tasks.get(attempt)
        if task is None or attempt not in self.live or task.stop_at:
            return
        task.stop_at = self.clock.now + after
        self.preempt_requests += preempted
        self.stops += 1
        self._activity += 1
        self.at(task.stop_at, "stop", (attempt, cause, reason))

    # -- the loop

    async def run(self, variant: str, data_dir: Path, configure: Configure) -> dict[str, Any]:
        for i in range(self.cluster.agents):
            self.agents.add_gpu_agent(f"gpu{i:02d}")
        for job in self.plan:
            self.at(self.t0 + job.submit_at, "submit", job)
        wall = time.perf_counter()
        async with core(data_dir, self.agents, self.clock, max_replacements=5) as controller:
            self.controller = controller
            features = configure(controller, variant, self.quotas)
            unsubscribe = controller.add_job_listener(lambda job: self._bump())
            await self._loop(controller)
            unsubscribe()
            states: dict[str, int] = {}
            for job_id in self.jobs:
                state = controller.jobs[job_id].state.value
                states[state] = states.get(state, 0) + 1
        return self._report(variant, features, states, time.perf_counter() - wall)

    def _bump(self) -> None:
        self._activity += 1

    async def _loop(self, controller: Controller) -> None:
        last = self.clock.now
        while self.events or self.live or self._open(controller):
            when = self.events[0][0] if self.events else self.clock.now + MAX_STEP
            when = max(self.clock.now, min(when, self.clock.now + MAX_STEP))
            self._account(controller, last, when)
            self.clock.now = last = when
            while self.events and self.events[0][0] <= when:
                _, _, kind, payload = heapq.heappop(self.events)
                await self._apply(controller, kind, payload)
            controller.machine.wake.set()
            await self._settle()
            if when - self.t0 > 7 * 24 * 3600:
                raise RuntimeError("the simulation did not finish in a simulated week: is a job stuck?")

    def _open(self, controller: Controller) -> bool:
        return any(not controller.jobs[j].state.terminal for j in self.jobs)

    async def _apply(self, controller: Controller, kind: str, payload: Any) -> None:
        now = self.clock.now
        if kind == "submit":
            job = await controller.submit(payload.spec, payload.user)
            self.jobs[job.id], self.submitted[job.id] = payload, now
        elif kind == "checkpoint":
            task = self.tasks[payload]
            if payload in self.live and not task.stop_at and task.done(now) < task.work:
                self.agents.checkpoint(payload, task.done(now))
                self.at(now + task.checkpoint_every, "checkpoint", payload)
        elif kind == "finish":
            task = self.tasks[payload]
            if payload in self.live and not task.stop_at:
                self._end(task, now)
                self.agents.finish(payload)
        elif kind == "stop":
            attempt, cause, reason = payload
            task = self.tasks[attempt]
            if attempt in self.live:
                if cause == ExitCause.PREEMPTED:
                    figures = self.users[self.jobs[task.job_id].user]
                    figures.preemptions += 1
                    figures.lost += (task.done(now) - task.checkpointed(now)) * task.amount
                self._end(task, now)
                self.agents.finish(attempt, TaskState.CANCELLED, cause, reason)
        self._activity += 1

    def _end(self, task: SimTask, now: float) -> None:
        task.ended = now
        self.live.discard(task.attempt)
        self.agents.ended(task.attempt)

    async def _settle(self) -> None:
        """Until the controller is quiet: no call, event or job change for a few turns of the loop (its store writes
        run in threads, so a turn includes a short real sleep)."""
        quiet, seen = 0, -1
        deadline = time.monotonic() + SETTLE_LIMIT
        while quiet < 3 or self._dispatching():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the controller was not quiet within {SETTLE_LIMIT} s (a dispatch never ran?)")
            for _ in range(20):
                await asyncio.sleep(0)
            if self._activity == seen:
                quiet += 1
                await asyncio.sleep(0.0005 * min(quiet, 10))
            else:
                quiet, seen = 0, self._activity

    def _dispatching(self) -> bool:
        """A task the controller dispatched that its agent has not started yet (its RunTask still on the way)."""
        assert self.controller is not None
        return any(
            t.state is TaskRunState.DISPATCHED and t.agent_task_id not in self.tasks
            for job in self.controller.machine.open.values()
            for t in job.tasks
        )

    # -- measuring

    def _account(self, controller: Controller, start: float, end: float) -> None:
        """GPU-seconds used and fair entitlements over [start, end): nothing changes between two steps."""
        dt = end - start
        if dt <= 0:
            return
        used: dict[str, float] = {}
        for attempt in self.live:
            task = self.tasks[attempt]
            user = self.jobs[task.job_id].user
            used[user] = used.get(user, 0.0) + task.amount
        demand = dict(used)
        for job_id, plan in self.jobs.items():
            job = controller.jobs[job_id]
            if job.state.terminal:
                continue
            waiting = sum(1 for t in job.tasks if t.state is TaskRunState.PENDING)
            if waiting:
                amount = gpu_amount(plan.spec, self.cluster.gpu_memory)
                demand[plan.user] = demand.get(plan.user, 0.0) + waiting * amount
        for user, limits in self.quotas.items():  # a quota caps what its user can be entitled to
            if user in demand and limits.get("gpus", -1) >= 0:
                demand[user] = min(demand[user], float(limits["gpus"]))
        for user, amount in used.items():
            self.users[user].used += amount * dt
        if sum(demand.values()) <= self.cluster.gpus + 1e-9:
            return  # everyone gets what they want: nothing to share out
        fair = max_min_fair(demand, float(self.cluster.gpus))
        for user, share in fair.items():
            self.users[user].entitled += share * dt
        for user, amount in used.items():
            self.users[user].contended_used += amount * dt
        total_used, total_fair = sum(used.values()) or 1.0, sum(fair.values()) or 1.0
        gap = sum(abs(used.get(u, 0.0) / total_used - fair.get(u, 0.0) / total_fair) for u in set(used) | set(fair))
        self.contended += dt
        self.distance += gap / 2 * dt

    def _report(self, variant: str, features: list[str], states: dict[str, int], wall: float) -> dict[str, Any]:
        for job_id, plan in self.jobs.items():
            start = self.first_start.get(job_id)
            if start is not None:
                self.users[plan.user].waits.append(start - self.submitted[job_id])
        total_used = sum(u.used for u in self.users.values()) or 1.0
        contended_used = sum(u.contended_used for u in self.users.values()) or 1.0
        total_entitled = sum(u.entitled for u in self.users.values()) or 1.0
        makespan = self.clock.now - self.t0
        users = {}
        for name, u in sorted(self.users.items()):
            users[name] = {
                "jobs": sum(1 for p in self.jobs.values() if p.user == name),
                "gpu_seconds": round(u.used),
                "share": round(u.contended_used / contended_used, 3),
                "fair_share": round(u.entitled / total_entitled, 3),
                "wait_s": summary(u.waits),
                "preemptions": u.preemptions,
                "gpu_seconds_lost_to_preemption": round(u.lost),
            }
        return {
            "variant": variant,
            "features": features,
            "states": states,
            "simulated_makespan_s": round(makespan),
            "utilisation": round(total_used / (self.cluster.gpus * makespan), 3) if makespan else 0.0,
            "contended_s": round(self.contended),
            "utilisation_while_contended": round(contended_used / (self.cluster.gpus * self.contended), 3)
            if self.contended
            else 0.0,
            # at each moment half the summed |share - fair share| over users (0: everyone gets their fair share now,
            # 1: nobody does), averaged over the contended time
            "distance_from_fair_share": round(self.distance / self.contended, 3) if self.contended else 0.0,
            "preempt_requests": self.preempt_requests,  # CancelTask(preempt) calls the controller made
            "preemptions": sum(u.preemptions for u in self.users.values()),  # tasks that ended preempted
            "gpu_seconds_lost_to_preemption": round(sum(u.lost for u in self.users.values())),
            "most_tasks_sharing_one_gpu": self.agents.most_sharing,
            # RunTask refused for want of GPU room: the controller promised what the agent did not have
            "run_task_refusals": sum(1 for call in self.agents.calls if call[0] == "refused"),
            "users": users,
            "wall_s": round(wall, 1),
        }


def side_by_side(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per user, each variant's share against fair share and waits, next to each other."""
    names = sorted({user for run in runs.values() for user in run["users"]})
    return {
        user: {
            variant: {
                "share": run["users"][user]["share"],
                "fair_share": run["users"][user]["fair_share"],
                "wait_mean_s": run["users"][user]["wait_s"]["mean"],
                "wait_p95_s": run["users"][user]["wait_s"]["p95"],
                "preemptions": run["users"][user]["preemptions"],
            }
            for variant, run in runs.items()
            if user in run["users"]
        }
        for user in names
    }


def max_min_fair(demand: dict[str, float], capacity: float) -> dict[str, float]:
    """Water-filling: each user with demand gets an equal split of the capacity, capped at what they want; what a
    capped user leaves is split among the others."""
    out: dict[str, float] = {}
    left, wanting = capacity, {u: d for u, d in demand.items() if d > 0}
    while wanting and left > 1e-9:
        equal = left / len(wanting)
        capped = {u: d for u, d in wanting.items() if d <= equal}
        if not capped:
            for u in wanting:
                out[u] = out.get(u, 0.0) + equal
            break
        for u, d in capped.items():
            out[u] = out.get(u, 0.0) + d
            left -= d
            del wanting[u]
    return out


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "max": round(ordered[-1], 1),
    }


# ---- the variants


def configure(controller: Controller, variant: str, quotas: dict[str, dict[str, int]]) -> list[str]:
    """Set the quotas and switch the scheduler's fair share for this variant; the names of the team features on."""
    if variant not in ("fair", "fifo"):
        raise ValueError(f"unknown variant {variant!r}: fair or fifo")
    for user, limits in quotas.items():
        controller.quotas.set(user, **limits)
    features = ["quotas"] if quotas else []
    controller.usage.fair = variant == "fair"  # [scheduler] fair_share: false is the submit order
    if variant == "fair":
        features.append("fair share")
    return [*features, "preemption", "gpu sharing"]  # always on: the scheduler's own


async def simulate(
    jobs: list[PlannedJob], quotas: dict[str, dict[str, int]], cluster: Cluster, variant: str
) -> dict[str, Any]:
    sim = Simulation(jobs, quotas, cluster)
    with tempfile.TemporaryDirectory(prefix="tensorfleet-team-") as root:
        return await sim.run(variant, Path(root), configure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="jobs per user times this (1.0: 1,000 jobs)")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--variants", default="fair,fifo", help="comma-separated: fair, fifo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    cluster = Cluster(agents=args.agents)
    jobs, quotas = team_workload(random.Random(args.seed), args.scale)
    runs = {}
    for variant in args.variants.split(","):
        runs[variant] = asyncio.run(simulate(jobs, quotas, cluster, variant))
    out = {
        "workload": {
            "jobs": len(jobs),
            "tasks": sum(int(j.spec.get("num_workers", 1)) for j in jobs),
            "agents": cluster.agents,
            "gpus": cluster.gpus,
            "gpu_memory_gib": cluster.gpu_memory // GIB,
            "quotas": quotas,
            "seed": args.seed,
            "fair_share_definition": "max-min fair among users with queued or running work, integrated over time",
        },
        "side_by_side": side_by_side(runs),
        "runs": runs,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
