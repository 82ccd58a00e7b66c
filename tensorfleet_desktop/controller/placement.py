"""The scheduling loop: on every wake-up (or tick) it times out jobs, re-places orphans, feeds sweeps, and
places pending tasks on agents with free slots (scheduler.plan decides where)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

from tensorfleet_desktop.controller.attempts import Attempts
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.jobs import JobMachine
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import JobState, TaskRunState
from tensorfleet_desktop.controller.ports import AgentPort, Clock
from tensorfleet_desktop.controller.scheduler import Capacity, Request, plan, rank_layout
from tensorfleet_desktop.controller.trials import SweepRunner

log = logging.getLogger(__name__)

TICK = 0.5


class Placement:
    def __init__(
        self,
        agents: AgentPort,
        machine: JobMachine,
        events: EventLog,
        attempts: Attempts,
        sweeps: SweepRunner,
        metrics: ControllerMetrics,
        clock: Clock,
        gang_reserve_after: float,
    ) -> None:
        self.agents = agents
        self.machine = machine
        self.events = events
        self.attempts = attempts
        self.sweeps = sweeps
        self.metrics = metrics
        self.clock = clock
        self.gang_reserve_after = gang_reserve_after
        self._gauges_at = 0.0

    def update_gauges(self) -> None:
        self.events.gauges_stale, self._gauges_at = False, time.monotonic()
        self.metrics.active_jobs.set(self.machine.active_jobs())

    async def run(self) -> None:
        wake = self.machine.wake
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):  # not wait_for: in 3.11 it can swallow the cancel of stop()
                    await wake.wait()
            wake.clear()
            try:
                started = time.perf_counter()
                self.machine.check_timeouts()
                self.attempts.check_orphans()
                self.schedule()
                self.metrics.schedule_pass.observe(time.perf_counter() - started)
                if self.events.gauges_stale and time.monotonic() - self._gauges_at >= TICK:
                    self.update_gauges()
            except Exception:
                log.exception("scheduler pass failed")

    def schedule(self) -> None:
        views = self.agents.agents()
        for job in list(self.machine.open.values()):
            if job.mode == "sweep" and job.state in (JobState.QUEUED, JobState.RUNNING):
                workload = str(job.spec["algorithm"])
                self.sweeps.feed(job, sum(a.slots_free for a in views if a.schedulable and workload in a.workloads))
        capacities = [
            Capacity(
                node_id=a.node_id,
                name=a.name,
                free_slots=a.slots_free,
                free_gpu_slots=max(0, a.gpu_slots - len(a.placed)) if a.gpu_slots else 0,
                gpu_free_memory=a.gpu_free_memory,
                load=a.load,
                labels=dict(a.labels),
                workloads=a.workloads,
            )
            for a in views
            if a.schedulable and not self.attempts.resting(a.node_id)  # it said "busy" a moment ago
        ]
        if not any(c.free_slots > 0 for c in capacities):
            return  # nothing can be placed: spare the pass over the queue
        requests = []
        now = self.clock.time()
        for job in self.machine.open.values():
            if job.state not in (JobState.QUEUED, JobState.RUNNING):
                continue
            pending = tuple(t.index for t in job.tasks if t.state is TaskRunState.PENDING and t.retry_at <= now)
            if not pending:
                continue
            gang = job.mode == "gang"
            if gang and len(pending) != len(job.tasks):
                continue  # wait until every rank of the gang is stopped before re-placing it
            c = job.spec.get("constraints", {})
            requests.append(
                Request(
                    job_id=job.id,
                    priority=job.priority,
                    seq_no=job.seq_no,
                    ranks=pending,
                    workload=str(job.spec["algorithm"]),
                    gpus=int(job.spec.get("gpus", 0)),
                    gang=gang,
                    on=tuple(c.get("on", ())),
                    not_on=tuple(c.get("not_on", ())),
                    labels=tuple(sorted(c.get("labels", {}).items())),
                    waiting_since=job.queued_since,
                    avoid=tuple(sorted({n for t in job.tasks if t.index in pending for n in t.failed_on})),
                )
            )
        if not requests:
            return
        placements = sorted(plan(requests, capacities, now, self.gang_reserve_after), key=lambda p: (p.job_id, p.rank))
        jobs = self.machine.jobs
        gangs: dict[str, dict[int, str]] = {}  # a gang is placed whole, so its layout is known here
        for p in placements:
            if jobs[p.job_id].mode == "gang":
                gangs.setdefault(p.job_id, {})[p.rank] = p.node_id
        layouts = {job_id: rank_layout(nodes) for job_id, nodes in gangs.items()}
        by_node = {a.node_id: a for a in views}
        for placement in placements:
            job = jobs[placement.job_id]
            agent = by_node[placement.node_id]
            if job.mode == "gang" and placement.rank == 0:
                # rank 0's agent hosts the rendezvous; a fresh port for every (re)start of the gang
                job.rendezvous = {
                    "master_addr": agent.address.rpartition(":")[0].strip("[]"),
                    "master_port": secrets.randbelow(30_000) + 20_000,
                }
            layout = layouts.get(job.id, {}).get(placement.rank)
            self.attempts.dispatch(job, job.tasks[placement.rank], agent, layout)
