"""Carrying out preemption: once a scheduling tick, the first queued job that cannot be placed (and is not held back
by its user's quota) may have running tasks of less important, preemptible jobs stopped for it
(preemption.choose). Each victim is asked to checkpoint and stop (AgentPort.preempt): it ends PREEMPTED and
jobs.py queues it again, resumed from its checkpoint later, a gang whole.

A round stays open until its job is placed (or a timeout): its job starts no second round meanwhile, its victims
are no one else's, and the room they free is held for it (`reserved`, passed to scheduler.plan): nothing behind it
in the queue, the victims' own re-queued tasks included, may take that room while it waits for the rest (a gang's
victims end one by one). A round whose victims have all ended but whose job still is not placed SETTLE seconds
later, or that times out, is given up, and its victims' jobs are spared by its job's next rounds for SPARE_FOR
seconds (never a new round against the same victims straight away). Both jobs say why: the waiting one "preempting
2 task(s) of job Y (priority -5) for it", the victims "preempted by job X (priority 10, alice)" in their history
and, while they wait again, as their `waiting` sentence."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter

from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller.background import Background
from tensorfleet_desktop.controller.errors import AgentBusy, AgentCallError, TaskUnknown
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.jobs import CHECKPOINTING, JobMachine
from tensorfleet_desktop.controller.model import Job, JobState, TaskRunState
from tensorfleet_desktop.controller.ports import AgentPort, AgentView, Clock
from tensorfleet_desktop.controller.preemption import Running, choose
from tensorfleet_desktop.controller.scheduler import Capacity, Request

log = logging.getLogger(__name__)

PREEMPT_GRACE = 30.0  # seconds a victim has to save a checkpoint and stop ([scheduler] preempt_grace)
ROUND_MARGIN = 30.0  # a round whose victims have not all ended by grace + this is given up (the job may try again)
REFUSED_FOR = 60.0  # seconds an attempt whose agent refused to preempt it is not chosen again
SCAN = 64  # queued jobs looked at, from the head, for one that preemption would place
SETTLE = 5.0  # seconds a round stays open once its victims have ended, for its job to be placed
SPARE_FOR = 60.0  # seconds a given-up round's victims' jobs are not chosen again for the same job


@dataclass
class _Round:
    job_id: str
    victims: dict[str, tuple[str, int]]  # attempt -> (job id, task index), until it ends
    started: float
    waiting: str  # the waiting job's sentence
    nodes: frozenset[str]  # the victims' agents: their room is held for the job while the round is open
    victim_jobs: frozenset[str]
    pending: int  # the job's pending tasks when the round began: fewer now means it was placed
    cleared: float | None = None  # when its last victim had ended


class Preempter:
    def __init__(
        self,
        agents: AgentPort,
        machine: JobMachine,
        events: EventLog,
        background: Background,
        clock: Clock,
        shares: dict[str, tuple[str, int, int]],
        counter: Counter,
    ) -> None:
        self.counter = counter  # tensorfleet_preemptions_total: each victim asked to stop
        self.agents = agents
        self.machine = machine
        self.events = events
        self.background = background
        self.clock = clock
        self.shares = shares  # attempt -> (node id, GPU index, bytes) of the tasks sharing a GPU (Attempts.gpu_shares)
        self.grace = PREEMPT_GRACE
        self.rounds: dict[str, _Round] = {}  # by the waiting job's id
        self.victim_of: dict[str, str] = {}  # a victim job's id -> why it waits again (until it is placed again)
        self._refused: dict[str, float] = {}  # attempt -> monotonic time its preemption was refused
        # job id -> (when its round was given up, the victims' jobs its next rounds spare)
        self._spared: dict[str, tuple[float, frozenset[str]]] = {}

    def reason(self, job_id: str) -> str:
        """The job's `waiting` sentence as far as preemption goes: its round's, or its victim's; "" if none."""
        current = self.rounds.get(job_id)
        if current is not None:
            return current.waiting
        return self.victim_of.get(job_id, "")

    def reserved(self) -> dict[str, frozenset[str]]:
        """The open rounds' jobs -> their victims' agents: scheduler.plan holds that room for them (`rounds`)."""
        return {job_id: current.nodes for job_id, current in self.rounds.items()}

    def tick(self, candidates: Iterable[tuple[Job, Request]], capacities: list[Capacity]) -> None:
        """Forget what has ended, then start at most one round: for the first of `candidates` (the queue's
        requests, in scheduling order, after this pass's placements, as far as their users' quotas let them now:
        a job its quota holds back is not among them) that does not fit and that preemption can make fit."""
        now = self.clock.monotonic()
        self._forget(now)
        if not capacities:
            return
        running = self._running(capacities, now)
        if not running:
            return
        for job, request in candidates:
            if job.id in self.rounds or job.state is JobState.PAUSED:
                continue
            spared = self._spared.get(job.id, (0.0, frozenset[str]()))[1]
            victims = choose(request, capacities, [r for r in running if r.job_id not in spared] if spared else running)
            if victims:
                self._start(job, victims, now)
                return

    def _forget(self, now: float) -> None:
        jobs = self.machine.jobs
        held = {attempt for a in self.agents.agents() for attempt in a.placed} if self.rounds else set()
        for job_id, current in list(self.rounds.items()):
            for attempt, (victim_id, index) in list(current.victims.items()):
                victim = jobs.get(victim_id)
                task = victim.tasks[index] if victim is not None and index < len(victim.tasks) else None
                moved_on = task is None or task.agent_task_id != attempt or not task.state.active
                # Gone once its slot is free too: a gang's other rank is cancelled after the first one's end, and
                # its slot counts until its agent confirms; a round over before that would preempt again.
                if moved_on and attempt not in held:
                    del current.victims[attempt]
            waiting = self.machine.open.get(job_id)
            placed = waiting is None or _pending(waiting) < current.pending
            if not current.victims and current.cleared is None:
                current.cleared = now  # its room is free now: the next pass places its job there (plan's `rounds`)
            over = now - current.started > self.grace + ROUND_MARGIN
            unplaced = current.cleared is not None and now - current.cleared > SETTLE
            if waiting is None or (placed and not current.victims) or over or unplaced:
                if waiting is not None and not placed:
                    log.warning(
                        "job %s: %s after %.0fs; giving up this round (its victims are spared for %.0fs)",
                        job_id,
                        "preempted tasks still run" if current.victims else "not placed in the room made for it",
                        now - current.started,
                        SPARE_FOR,
                    )
                    self._spared[job_id] = (now, current.victim_jobs)
                del self.rounds[job_id]
                if waiting is not None and waiting.waiting == current.waiting:
                    waiting.waiting = ""  # placement gives it its next sentence; none if it is placed now
                    self.events.touched(waiting)
        stopping = {victim_id for r in self.rounds.values() for victim_id, _ in r.victims.values()}
        for victim_id in list(self.victim_of):
            victim = self.machine.open.get(victim_id)
            if victim_id in stopping and victim is not None:
                continue  # still stopping: it waits again once it has ended
            if victim is None or not any(t.state is TaskRunState.PENDING for t in victim.tasks):
                del self.victim_of[victim_id]  # placed again (or ended): no longer waiting because of it
                if victim is not None and victim.waiting.startswith("preempted by"):
                    victim.waiting = ""
                    self.events.touched(victim)
        for attempt, at in list(self._refused.items()):
            if now - at > REFUSED_FOR:
                del self._refused[attempt]
        for spared_for, (at, _) in list(self._spared.items()):
            if now - at > SPARE_FOR or spared_for not in self.machine.open:
                del self._spared[spared_for]

    def _running(self, capacities: list[Capacity], now: float) -> list[Running]:
        """Every running task on an agent the scheduler may use that is in no round and not already stopping."""
        views = {a.node_id: a for a in self.agents.agents()}
        usable = {c.node_id for c in capacities}
        taken = {attempt for r in self.rounds.values() for attempt in r.victims}
        out: list[Running] = []
        for job in self.machine.open.values():
            if job.state is not JobState.RUNNING or not job.preemptible or job.id in self.machine.registering:
                continue
            gang = job.mode == "gang"
            saved = _checkpointed(job)
            for task in job.tasks:
                attempt = task.agent_task_id
                if (
                    not task.state.active
                    or not attempt
                    or task.stopping
                    or attempt in taken
                    or attempt in self._refused
                    or task.node_id not in usable
                ):
                    if gang and task.state.active:
                        out = [r for r in out if r.job_id != job.id]  # a gang with a rank out of reach is kept
                        break
                    continue
                view: AgentView | None = views.get(task.node_id)
                share = self.shares.get(attempt)
                out.append(
                    Running(
                        job_id=job.id,
                        rank=task.index,
                        attempt=attempt,
                        node_id=task.node_id,
                        priority=job.priority,
                        preemptible=True,
                        started_at=task.started_at,
                        saved_at=saved.at(task.index),
                        has_checkpoint=saved(task.index),
                        allow_restart=bool(job.spec.get("allow_restart", False)),
                        gang=gang,
                        slots=1,  # what an attempt holds of its agent (AgentView.slots_free, placement's GPU slots)
                        gpu_slots=1 if view is not None and view.gpu_slots else 0,
                        gpu_share=(share[1], share[2]) if share is not None and share[0] == task.node_id else None,
                    )
                )
        return out

    def _start(self, job: Job, victims: tuple[Running, ...], now: float) -> None:
        by_job: dict[str, int] = {}
        for victim in victims:
            by_job[victim.job_id] = by_job.get(victim.job_id, 0) + 1
        jobs = self.machine.jobs
        parts = [f"{n} task(s) of {_about(jobs[j], f'priority {jobs[j].priority}')}" for j, n in by_job.items()]
        waiting = f"preempting {' and '.join(parts)} for it"
        current = _Round(
            job.id,
            {v.attempt: (v.job_id, v.rank) for v in victims},
            now,
            waiting,
            frozenset(v.node_id for v in victims),
            frozenset(by_job),
            _pending(job),
        )
        self.rounds[job.id] = current
        why = "preempted by " + _about(job, f"priority {job.priority}", *([job.submitter] if job.submitter else []))
        log.info("job %s: %s", job.id, waiting)
        for victim in victims:
            victim_job = jobs[victim.job_id]
            task = victim_job.tasks[victim.rank]
            self.events.task_event(victim_job, task, f"{why}: saving a checkpoint, then stopping")
            self.victim_of[victim_job.id] = why
            self.counter.inc()
            self.background.spawn(self._preempt(victim.node_id, victim.attempt, why))
        job.waiting = waiting
        self.events.job_changed(job, waiting)

    async def _preempt(self, node_id: str, attempt: str, why: str) -> None:
        try:
            await self.agents.preempt(node_id, attempt, why, self.grace)
        except (AgentBusy, AgentCallError, TaskUnknown) as exc:
            # It runs on (or has ended already): not chosen again for a while; its round forgets it.
            log.info("could not preempt %s on %s: %s", attempt, node_id, exc)
            self._refused[attempt] = self.clock.monotonic()
            for current in self.rounds.values():
                current.victims.pop(attempt, None)
            self.machine.wake.set()


def _pending(job: Job) -> int:
    return sum(t.state is TaskRunState.PENDING for t in job.tasks)


def _about(job: Job, *more: str) -> str:
    """`job ID (name, more...)`: the name left out when it is the id."""
    said = [job.name] if job.name != job.id else []
    return f"job {job.id} ({', '.join([*said, *more])})"


def _checkpointed(job: Job) -> _Saved:
    """Whether a task would resume from a checkpoint (attempts._with_checkpoint's rule): its workload can, and the job
    keeps one (a sweep's trial: one of its own)."""
    if get_workload(str(job.spec["algorithm"])).category not in CHECKPOINTING:
        return _Saved({}, whole=False)
    newest: dict[int, float] = {}
    for a in job.artifacts:
        if a.kind == "checkpoint":
            newest[a.task_index] = max(newest.get(a.task_index, 0.0), a.created_at)
    return _Saved(newest, whole=job.mode != "sweep" and bool(newest))


@dataclass(frozen=True)
class _Saved:
    newest: dict[int, float]  # task index -> when its newest checkpoint was kept
    whole: bool  # any of the job's checkpoints resumes any of its tasks

    def __call__(self, index: int) -> bool:
        return self.whole or index in self.newest

    def at(self, index: int) -> float:
        """When the checkpoint the task would resume from was kept (0: none): its work since then is what is lost."""
        if index in self.newest:
            return self.newest[index]
        return max(self.newest.values()) if self.whole else 0.0
