"""Preemption: which running tasks to stop so that a more important job fits. A pure function, no I/O, tested as a
unit; placement.py asks it for the head of the queue once a tick and carries out its answer.

A victim is a task of a preemptible job of lower priority than the waiting job that can lose its run: it has a
checkpoint to resume from, or its job allows starting over. A gang's running ranks go together (the gang stops and
resumes whole). Among the sets of victims that make the job fit by the scheduler's own rule (scheduler.plan over the
capacities as they would be without them), the answer has the fewest tasks, then the lowest priorities, then the
least work lost (the latest checkpoint or start), then those with a checkpoint. The search is bounded: every single
unit (a task, or a gang whole), every pair while there are few, and greedy sets (per agent, and over all) pruned of
what they do not need, so a pass over a large cluster stays cheap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from tensorfleet_desktop.controller.scheduler import Capacity, Request, eligible, plan, shareable

#: Units (a task, or a gang whole) up to which every pair of them is tried, beyond the single units and greedy sets.
PAIRS_UP_TO = 24


@dataclass(frozen=True)
class Running:
    """A running task as preemption sees it."""

    job_id: str
    rank: int
    attempt: str  # its id on its agent
    node_id: str
    priority: int  # its job's
    preemptible: bool  # its job's (Job.preemptible)
    started_at: float
    has_checkpoint: bool  # a checkpoint of this task is kept, and its workload resumes from one
    # when the work it would lose began: the later of its start and its newest checkpoint (0: its start)
    saved_at: float = 0.0
    allow_restart: bool = False  # its job may start over without a checkpoint
    gang: bool = False  # its job's ranks stop and resume together
    slots: int = 1  # what stopping it frees on its agent: slots, and GPU slots
    gpu_slots: int = 0
    # a task sharing a GPU by memory: (GPU index, bytes). Stopping it gives those bytes back on that GPU and no slot
    # (a shared GPU is one slot however many share it; whether this was its last share is not known here)
    gpu_share: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Unit:
    """What is stopped together: one task, or every running rank of a gang."""

    tasks: tuple[Running, ...]

    @property
    def key(self) -> tuple[int, int, float, int]:
        # fewest tasks, lowest priority, least work lost (the latest checkpoints or starts), with a checkpoint
        return (
            len(self.tasks),
            max(t.priority for t in self.tasks),
            -sum(max(t.started_at, t.saved_at) for t in self.tasks),
            sum(not t.has_checkpoint for t in self.tasks),
        )


def can_lose(task: Running, priority: int) -> bool:
    """Whether `task` may be stopped for a job of `priority`."""
    return task.preemptible and task.priority < priority and (task.has_checkpoint or task.allow_restart)


def choose(request: Request, capacities: Sequence[Capacity], running: Sequence[Running]) -> tuple[Running, ...]:
    """The tasks to stop so that `request` fits; () when it fits already or no allowed set makes it fit. A job that
    is not a gang whose ranks cannot all be made to fit gets room for as many of them as can."""
    capacities = [c for c in capacities if eligible(request, c)]  # the only ones plan() would use
    if _fits(request, capacities, {}):
        return ()
    units = _units(request, capacities, running)
    if not units:
        return ()
    counts = [len(request.ranks)] if request.gang else range(len(request.ranks), 0, -1)
    for count in counts:
        wanted = replace(request, ranks=request.ranks[:count])
        best = _search(wanted, capacities, units)
        if best is not None:
            return tuple(t for unit in best for t in unit.tasks)
    return ()


def _units(request: Request, capacities: Sequence[Capacity], running: Sequence[Running]) -> list[_Unit]:
    """The units that may be stopped and would free room on an agent the request may use, best first."""
    useful = {c.node_id for c in capacities if eligible(request, c)}
    gangs: dict[str, list[Running]] = {}
    units: list[_Unit] = []
    for task in running:
        if task.gang:
            gangs.setdefault(task.job_id, []).append(task)
        elif can_lose(task, request.priority) and task.node_id in useful:
            units.append(_Unit((task,)))
    for ranks in gangs.values():
        # a gang goes whole or not at all: every rank must be allowed to stop
        if all(can_lose(t, request.priority) for t in ranks) and any(t.node_id in useful for t in ranks):
            units.append(_Unit(tuple(sorted(ranks, key=lambda t: t.rank))))
    units.sort(key=lambda u: (u.key, u.tasks[0].job_id, u.tasks[0].rank))
    return units


@dataclass
class _Freed:
    slots: int = 0
    gpu_slots: int = 0
    memory: dict[int, int] = field(default_factory=dict)  # GPU index -> bytes given back by shares


def _freed(units: Sequence[_Unit]) -> dict[str, _Freed]:
    out: dict[str, _Freed] = {}
    for unit in units:
        for t in unit.tasks:
            freed = out.setdefault(t.node_id, _Freed())
            if t.gpu_share is not None:
                index, memory = t.gpu_share
                freed.memory[index] = freed.memory.get(index, 0) + memory
            else:
                freed.slots += t.slots
                freed.gpu_slots += t.gpu_slots
    return out


_NOTHING = _Freed()


def _fits(request: Request, capacities: Sequence[Capacity], freed: dict[str, _Freed]) -> bool:
    """Whether scheduler.plan places every rank of `request` once `freed` is given back on its agents."""
    after = []
    for c in capacities:
        more = freed.get(c.node_id, _NOTHING)
        rooms = c.gpus
        if more.memory:
            rooms = tuple(
                replace(g, free_memory=min(g.total_memory, g.free_memory + more.memory.get(g.index, 0)))
                if g.index in more.memory
                else g
                for g in c.gpus
            )
        # a full agent takes nothing (unless a rank may join a shared GPU there): left out, plan() stays cheap
        if c.free_slots + more.slots > 0 or shareable([c]) or more.memory:
            after.append(
                Capacity(
                    c.node_id,
                    c.name,
                    c.free_slots + more.slots,
                    c.free_gpu_slots + more.gpu_slots,
                    c.gpu_free_memory + sum(more.memory.values()),
                    c.load,
                    c.labels,
                    c.workloads,
                    rooms,
                )
            )
    return len(plan([request], after, 0.0, math.inf)) == len(request.ranks)


def _cost(units: Sequence[_Unit]) -> tuple[int, int, float, int]:
    keys = [u.key for u in units]
    return (
        sum(k[0] for k in keys),
        sum(k[1] * k[0] for k in keys),
        sum(k[2] for k in keys),
        sum(k[3] for k in keys),
    )


def _search(request: Request, capacities: Sequence[Capacity], units: list[_Unit]) -> list[_Unit] | None:
    candidates: list[list[_Unit]] = []

    def fits(chosen: Sequence[_Unit]) -> bool:
        return _fits(request, capacities, _freed(chosen))

    if not fits(units):
        return None  # not even stopping every allowed victim makes room
    for unit in units:  # best first: the first single unit that fits is the best single one
        if fits([unit]):
            candidates.append([unit])
            break
    if len(units) <= PAIRS_UP_TO:
        for pair in itertools.combinations(units, 2):
            if fits(list(pair)):
                candidates.append(list(pair))
    nodes = sorted({t.node_id for u in units for t in u.tasks})
    for node in nodes:  # room made on one agent (one rank's, or a few ranks' on the same agent)
        greedy = _greedy([u for u in units if any(t.node_id == node for t in u.tasks)], fits)
        if greedy is not None:
            candidates.append(greedy)
    if len(request.ranks) > 1:  # room made across agents (several ranks); one rank goes on one agent
        greedy = _greedy(units, fits)
        if greedy is not None:
            candidates.append(greedy)
    return min(candidates, key=_cost) if candidates else None


def _greedy(units: list[_Unit], fits: Callable[[Sequence[_Unit]], bool]) -> list[_Unit] | None:
    """Units added best first until the request fits, then those it does not need dropped (the worst first)."""
    if not units or not fits(units):
        return None
    low, high = 1, len(units)  # the shortest prefix that fits (more room never hurts): found by halving
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(units[:middle]) else (middle + 1, high)
    chosen = units[:low]
    for unit in sorted(chosen, key=lambda u: u.key, reverse=True):
        rest = [u for u in chosen if u is not unit]
        if rest and fits(rest):
            chosen = rest
    return chosen
