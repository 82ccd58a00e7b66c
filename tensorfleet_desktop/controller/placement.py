"""The scheduling loop: on every wake-up (a submit, a slot freeing, an agent's change) it feeds sweeps and places
pending tasks on agents with free slots (scheduler.plan decides where); every TICK it also times out jobs and
re-places orphans (time-based checks that need no pass per event).

A pass costs what it places, not the queue's length: the open jobs are kept in scheduling order as they come
(priority, then fair share: per-user FIFO queues merged by each user's recent usage and holdings, fair_share.py),
and plan() reads them lazily, stopping once every free slot is taken; with no slot free but a GPU shared by memory
with room left, it reads on from the sharing jobs only (kept in their own FairQueue). Quotas (quotas.py) hold a
user's requests back with a reason, shown as the job's `waiting` sentence."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from tensorfleet_desktop.controller.attempts import Attempts
from tensorfleet_desktop.controller.capacity import DEMAND_AFTER, DEMAND_SCAN, CapacitySource, Waiting, plain_reason
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.fair_share import FairQueue
from tensorfleet_desktop.controller.gpu_share import agent_capacity, shares_gpu
from tensorfleet_desktop.controller.jobs import JobMachine
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobState, JobTask, TaskRunState
from tensorfleet_desktop.controller.ports import AgentPort, AgentView, Clock
from tensorfleet_desktop.controller.preempter import SCAN as PREEMPT_SCAN
from tensorfleet_desktop.controller.preempter import Preempter
from tensorfleet_desktop.controller.quotas import Gate
from tensorfleet_desktop.controller.scheduler import Capacity, Request, eligible, plan, rank_layout, shareable
from tensorfleet_desktop.controller.scheduler import Placement as Placed
from tensorfleet_desktop.controller.team_usage import TeamUsage, user_of
from tensorfleet_desktop.controller.trials import SweepRunner, bundle_size

log = logging.getLogger(__name__)

TICK = 0.5
STAGE_SCAN = 32  # queued jobs a pass looks at for a dataset to stage
STAGE_AFTER = 5.0  # seconds a job waits unplaced before its dataset is staged (one placed soon needs none)
_COMPACT = 64  # ended jobs the order keeps (beyond a quarter of the open ones) before it is rebuilt without them


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
        usage: TeamUsage,
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
        self._checked_at = -TICK  # clock.monotonic() of the last timeout and orphan check
        self.usage = usage  # what each user runs and used lately (quotas, fair share); its queue holds the order
        self.held: dict[str, str] = {}  # job id -> why quota holds it back, as of the last pass (none if it read none)
        self._sweeps: set[str] = set()  # the sweeps among them
        self._uploads: set[str] = set()  # those naming an upload dataset version (_stage_waiting), and some ended
        # the jobs sharing a GPU by memory, in the same order: with no slot free, only those can be placed
        self._sharing = FairQueue()
        self.sources: list[CapacitySource] = []  # who can bring capacity that is not online (capacity.py)
        self._capacities: list[Capacity] = []  # the online agents' capacity at the last pass
        # node id -> (the view, the GPU shares, its capacity): an agent's capacity is made again only when its view
        # (agent_link keeps a view while its agent is unchanged) or shares changed; plan() copies before it writes
        self._made: dict[str, tuple[AgentView, list[tuple[int, int]], Capacity]] = {}
        self._waiting: set[str] = set()  # ids of the jobs given a `waiting` reason at the last demand check
        self._failing: set[str] = set()  # names of the sources whose offer() raised at the last tick
        # room made for the important: running tasks of less important jobs stopped at a checkpoint
        self.preempter = Preempter(
            agents, machine, events, attempts.background, clock, attempts.gpu_shares, metrics.preemptions
        )

    def update_gauges(self) -> None:
        self.events.gauges_stale, self._gauges_at = False, time.monotonic()
        self.metrics.active_jobs.set(self.machine.active_jobs())

    def _stage_waiting(self, capacities: list[Capacity], placed: set[str], now: float) -> None:
        """The first queued jobs naming an upload dataset version that have waited STAGE_AFTER unplaced start
        getting it onto the agents they will likely use (those it may run on, holders first, one per rank). A job
        placed within moments is not staged: its dispatch shares the copy among its readers better (_peer_plan). With
        no open job naming one (most passes), the queue is not read."""
        open_ = self.machine.open
        self._uploads = {job_id for job_id in self._uploads if job_id in open_}
        if not self._uploads:
            return
        for job in itertools.islice(self._queue(), STAGE_SCAN):
            if (
                job.state is not JobState.QUEUED
                or job.id in placed
                or job.id in self.attempts.staged
                or _upload_version(job) is None
                or now - job.queued_since < STAGE_AFTER
            ):
                continue
            request = self._request(job, now)
            if request is None:
                continue
            likely = sorted(
                (c.node_id for c in capacities if eligible(request, c) and c.node_id not in request.avoid),
                key=lambda node: (node not in request.prefer, node),
            )
            self.attempts.stage(job, likely[: len(request.ranks)])

    def _holding(self, job: Job) -> tuple[str, ...]:
        """The agents holding the job's upload dataset version (placement tries them first)."""
        version = _upload_version(job)
        if version is None:
            return ()
        return tuple(sorted(self.attempts.holders.version_holders(str(version["content_id"]))))

    async def run(self) -> None:
        wake = self.machine.wake
        while True:
            if not wake.is_set():  # when busy it is set already: no timer armed and cancelled for nothing
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK):  # not wait_for: in 3.11 it can swallow the cancel of stop()
                        await wake.wait()
            else:
                await asyncio.sleep(0)  # the loop's other work gets a turn between two passes
            wake.clear()
            try:
                started = time.perf_counter()
                self.pass_once()
                self.metrics.schedule_pass.observe(time.perf_counter() - started)
                if self.events.gauges_stale and time.monotonic() - self._gauges_at >= TICK:
                    self.update_gauges()
            except Exception:
                log.exception("scheduler pass failed")

    def pass_once(self) -> None:
        """One pass: the time-based checks when a TICK has passed since the last, then placement."""
        now = self.clock.monotonic()
        if now - self._checked_at >= TICK:
            self._checked_at = now
            self.machine.check_timeouts()
            self.attempts.check_orphans()
            self.usage.tick(self.clock.time(), self.machine.open)
            self.schedule()
            self.preempter.tick(self._wanting(), self._capacities_of(self.agents.agents()))
            self._offer_demand()
            return
        self.schedule()

    def _offer_demand(self) -> None:
        """Once a TICK: the head of the queue that no online agent took is offered to the capacity sources, and each
        such job gets a `waiting` reason (a source's, or plain_reason's); jobs no longer waiting lose theirs."""
        now = self.clock.time()
        waiting: list[Waiting] = []
        # over quota: no source can help; the reason is the quota's. The last placing pass's verdicts, and this
        # check's own (a full cluster runs no placing pass, yet a job over quota must say so, not "a free slot")
        held = dict(self.held)
        gate = self.usage.gate(now)  # reads a bounded number of one user's jobs held by their queued quota
        for job in self._queue(gate):
            if len(waiting) >= DEMAND_SCAN:
                break
            over = gate.queued_job(user_of(job)) if job.state is JobState.QUEUED else ""
            if over:
                held[job.id] = over
            if over or now - job.queued_since < DEMAND_AFTER or job.id in held:
                continue
            request = self._request(job, now)
            if request is None:
                continue
            allowed, why = gate.allow(request)
            if not allowed:
                held[job.id] = why
                continue
            waiting.append(Waiting(request, job.name, job.spec, now - job.queued_since))
        reasons: dict[str, str] = {}
        for source in self.sources:
            try:
                offered = source.offer(waiting, self._capacities, now)
            except Exception:  # a source's bug must not stop scheduling; logged once, not every tick
                if source.name not in self._failing:
                    self._failing.add(source.name)
                    log.exception("capacity source %s failed (logged once until it recovers)", source.name)
                continue
            self._failing.discard(source.name)
            for job_id, reason in offered.items():
                reasons.setdefault(job_id, reason)
        open_ = self.machine.open
        current: set[str] = set()
        for job_id, reason in held.items():
            held_job = open_.get(job_id)
            if held_job is not None and held_job.state in (JobState.QUEUED, JobState.RUNNING):
                current.add(job_id)
                if held_job.waiting != reason:
                    held_job.waiting = reason
                    self.events.touched(held_job)
        for item in waiting:
            job = open_[item.request.job_id]
            reason = self.preempter.reason(job.id) or reasons.get(job.id) or plain_reason(item, self._capacities)
            current.add(job.id)
            if job.waiting != reason:
                job.waiting = reason
                self.events.touched(job)
        for job_id in self._waiting - current:
            gone = self.machine.jobs.get(job_id)
            if gone is not None and gone.waiting:
                gone.waiting = ""
                self.events.touched(gone)
        self._waiting = current

    def _refresh(self) -> None:
        """Bring the order up to date: new open jobs join their user's queue; ended ones are skipped by _queue,
        and dropped once enough have ended."""
        open_ = self.machine.open
        queue = self.usage.queue
        # those put in `open` since the last pass (not a set difference over every open job: one pass per placed
        # task over a 10,000-job queue)
        joined, self.machine.joined = self.machine.joined, []
        new = list({job.id: job for job in joined if open_.get(job.id) is job and job.id not in queue}.values())
        queue.add_many((job.id, job.priority, job.seq_no, user_of(job)) for job in new)
        self._sweeps.update(job.id for job in new if job.mode == "sweep")
        self._uploads.update(job.id for job in new if _upload_version(job))
        self._sharing.add_many(
            (j.id, j.priority, j.seq_no, user_of(j)) for j in new if shares_gpu(j.spec) and j.id not in self._sharing
        )
        if len(queue) - len(open_) > _COMPACT + len(open_) // 4:  # amortized: a pass skips few
            queue.compact(open_)
            self._sharing.compact(open_)
            self._sweeps &= queue.ids()

    def _queue(self, gate: Gate | None = None) -> Iterator[Job]:
        """The open jobs in scheduling order: priority, then fair share (the users' keys as `gate` tells them: a
        pass's gate sees what the pass placed)."""
        open_ = self.machine.open
        gate = gate or self.usage.gate(self.clock.time())
        for job_id in self.usage.queue.order(gate.key, gate.cut, open_):
            job = open_.get(job_id)
            if job is not None:
                yield job

    def _requests(
        self, gate: Gate, held: dict[str, str], now: float, sweeps: dict[str, tuple[int, ...]]
    ) -> Iterator[Request]:
        """The queue's requests in order; a queued job beyond its user's `queued` quota is held, not asked. A
        sweep's pending trials go in `sweeps` (job id -> indexes) for _bundles: they are not scanned twice."""
        for job in self._queue(gate):
            if job.state is JobState.QUEUED:
                reason = gate.queued_job(user_of(job))
                if reason:
                    held[job.id] = reason
                    continue
            request = self._request(job, now)
            if request is not None:
                if job.mode == "sweep":
                    sweeps[job.id] = request.ranks
                yield request

    def _sharing_requests(self, gate: Gate, now: float) -> Iterator[Request]:
        """The requests of the jobs sharing a GPU, in the queue's order (plan() reads them once no slot is free). A
        queued one whose user has a `queued` quota is left for a pass that reads the whole queue's head: its place
        among its user's queued jobs is not known here."""
        open_ = self.machine.open
        for job_id in self._sharing.order(gate.key, gate.cut, open_):
            job = open_.get(job_id)
            if job is None:
                continue
            if job.state is JobState.QUEUED:
                quota = gate.quotas.get(user_of(job))
                if quota is not None and quota.queued >= 0:
                    continue
            request = self._request(job, now)
            if request is not None:
                yield request

    def schedule(self) -> None:
        views = self.agents.agents()
        self._refresh()
        sweep_slots: dict[str, int] = {}  # sweep job id -> the slots that run its workload (its bundles' size)
        for job_id in sorted(self._sweeps):
            job = self.machine.open.get(job_id)
            if job is None:
                self._sweeps.discard(job_id)
            elif job.state in (JobState.QUEUED, JobState.RUNNING):
                free, sweep_slots[job_id] = slots_for(views, str(job.spec["algorithm"]))
                self.sweeps.feed(job, free, sweep_slots[job_id])
        capacities = self._capacities_of(views)
        self._capacities = capacities
        now = self.clock.time()
        placed: list[Placed] = []
        self.usage.check(self.machine.jobs)  # what ended since the last pass holds nothing now
        # else nothing can be placed (no free slot, no shared GPU with memory left): spare the pass over the queue
        held: dict[str, str] = {}  # a pass that reads no request leaves no verdict (stale ones would outlive a quota)
        pending: dict[str, tuple[int, ...]] = {}  # sweep job id -> its pending trials, as its request read them
        if any(c.free_slots > 0 for c in capacities) or shareable(capacities):
            gate = self.usage.gate(now)
            # plan() reads them in this order and stops once every free slot is taken: the rest are never built
            requests = self._requests(gate, held, now, pending)
            rounds = self.preempter.reserved()  # the room preemption frees for a job is held for it
            placed = plan(
                requests,
                capacities,
                now,
                self.gang_reserve_after,
                ordered=True,
                gate=gate,
                held=held,
                rounds=rounds,
                sharing=lambda: self._sharing_requests(gate, now),  # no slot left: the rest of the queue is not read
            )
        self.held = held
        if self.attempts.peer_transfer and self.attempts.tickets is not None:  # staged blobs reach others as peers
            self._stage_waiting(capacities, {p.job_id for p in placed}, now)
        if not placed:
            return
        placements = sorted(placed, key=lambda p: (p.job_id, p.rank))
        jobs = self.machine.jobs
        gangs: dict[str, dict[int, str]] = {}  # a gang is placed whole, so its layout is known here
        for p in placements:
            if jobs[p.job_id].mode == "gang":
                gangs.setdefault(p.job_id, {})[p.rank] = p.node_id
        layouts = {job_id: rank_layout(nodes) for job_id, nodes in gangs.items()}
        by_node = {a.node_id: a for a in views}
        bundles = self._bundles(placements, sweep_slots, now, pending)
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
            share = (placement.gpu, placement.gpu_memory) if placement.gpu_memory else None
            riders = bundles.get((job.id, placement.rank), ())
            self.attempts.dispatch(job, job.tasks[placement.rank], agent, layout, share, riders)
            total = next((g.total_memory for g in agent.gpus if g.index == placement.gpu), 0) if share else 0
            self.usage.placed(job, job.tasks[placement.rank], total)

    def _bundles(
        self, placements: list[Placed], sweep_slots: dict[str, int], now: float, pending: dict[str, tuple[int, ...]]
    ) -> dict[tuple[str, int], list[JobTask]]:
        """The trials that ride with each placed trial of a sweep (trials.bundle_size): the job's other pending
        trials, shared out among its placements of this pass; its agent runs them one after another in one worker.
        `pending`: the sweeps' pending trials as this pass's requests found them (a sweep placed from elsewhere, the
        queue's sharing requests, is scanned here)."""
        ranks: dict[str, list[int]] = {}
        for p in placements:
            if self.machine.jobs[p.job_id].mode == "sweep":
                ranks.setdefault(p.job_id, []).append(p.rank)
        out: dict[tuple[str, int], list[JobTask]] = {}
        for job_id, placed in ranks.items():
            job = self.machine.jobs[job_id]
            extra = bundle_size(job, sweep_slots.get(job_id, len(placed))) - 1
            if extra <= 0:
                continue
            taken = set(placed)
            indexes = pending.get(job_id)
            if indexes is not None:
                spare = [job.tasks[i] for i in indexes if i not in taken]
            else:
                spare = [job.tasks[i] for i in _pending(job, now) if i not in taken]
            for i, rank in enumerate(placed):  # dealt out in turn: at a sweep's tail every placed trial gets some
                out[(job_id, rank)] = spare[i :: len(placed)][:extra]
        return out

    def _capacities_of(self, views: list[AgentView]) -> list[Capacity]:
        """The agents the scheduler may place on now, as it counts their room (with the GPU shares it sent them
        since their last telemetry: gpu_share.agent_capacity)."""
        shares = self.attempts.shares_held(views)
        out = []
        made = self._made
        for a in views:
            if not a.schedulable or self.attempts.resting(a.node_id):  # it said "busy" a moment ago
                continue
            held = shares.get(a.node_id, [])
            cached = made.get(a.node_id)
            if cached is not None and cached[0] is a and cached[1] == held:
                out.append(cached[2])
                continue
            free_slots, free_gpu_slots, rooms = agent_capacity(a, held)
            capacity = Capacity(
                node_id=a.node_id,
                name=a.name,
                free_slots=free_slots,
                free_gpu_slots=free_gpu_slots,
                gpu_free_memory=a.gpu_free_memory,
                load=a.load,
                labels=dict(a.labels),
                workloads=a.workloads,
                gpus=rooms,
            )
            made[a.node_id] = (a, held, capacity)
            out.append(capacity)
        if len(made) > len(views):  # agents removed
            for node_id in made.keys() - {a.node_id for a in views}:
                del made[node_id]
        return out

    def _wanting(self) -> Iterator[tuple[Job, Request]]:
        """The head of the queue's requests as this pass left them, for preemption: as far as quotas let them (a
        job its user's quota holds back is never preempted for), in scheduling order."""
        now = self.clock.time()
        gate = self.usage.gate(now)
        for job in itertools.islice(self._queue(gate), PREEMPT_SCAN):
            if job.state is JobState.QUEUED and gate.queued_job(user_of(job)):
                continue
            request = self._request(job, now)
            if request is None:
                continue
            allowed, _ = gate.allow(request)
            if allowed > 0:
                yield job, request if allowed == len(request.ranks) else replace(request, ranks=request.ranks[:allowed])

    def _request(self, job: Job, now: float) -> Request | None:
        """What the job asks of the scheduler now: its pending ranks; None when it asks nothing."""
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            return None
        pending = _pending(job, now)
        if not pending:
            return None
        gang = job.mode == "gang"
        if gang and len(pending) != len(job.tasks):
            return None  # wait until every rank of the gang is stopped before re-placing it
        c = job.spec.get("constraints", {})
        return Request(
            job_id=job.id,
            priority=job.priority,
            seq_no=job.seq_no,
            user=user_of(job),
            ranks=pending,
            workload=str(job.spec["algorithm"]),
            gpus=int(job.spec.get("gpus", 0)),
            gang=gang,
            on=tuple(c.get("on", ())),
            not_on=tuple(c.get("not_on", ())),
            labels=tuple(sorted(c.get("labels", {}).items())),
            waiting_since=job.queued_since,
            avoid=tuple(sorted({n for i in pending for n in job.tasks[i].failed_on})),
            prefer=self._holding(job),
            gpu_memory=int(job.spec.get("gpu_memory") or 0),  # each rank shares one GPU (gpu_share.py)
            gpu_fraction=float(job.spec.get("gpu_fraction") or 0.0),
        )


def slots_for(views: list[AgentView], workload: str) -> tuple[int, int]:
    """(free, all) slots of the schedulable agents that run `workload`: a sweep asks for trials for the free ones,
    and sizes its bundles by all of them (trials.bundle_size)."""
    able = [a for a in views if a.schedulable and workload in a.workloads]
    return sum(a.slots_free for a in able), sum(max(a.slots_total, a.slots_free) for a in able)


def _pending(job: Job, now: float) -> tuple[int, ...]:
    """The job's ranks waiting to be placed now (a task's index is its place in job.tasks)."""
    return tuple(t.index for t in job.tasks if t.state is TaskRunState.PENDING and t.retry_at <= now)


def _upload_version(job: Job) -> dict[str, Any] | None:
    """The job's dataset version when it is an uploaded one (staged and peer-copied), else None."""
    version = job.spec.get("dataset_version")
    return version if version and version.get("source") == "upload" else None
