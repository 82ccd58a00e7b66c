"""Placement: pure functions, no I/O, so they are tested exhaustively as units.

Order: priority (higher first), then FIFO. A job of N ranks is a gang: all N
placements at once or none. Smaller jobs may backfill around a waiting gang,
but once the gang has waited `reserve_after` seconds it reserves every free slot
it could use, so it never starves; so does a rank that needs several GPUs on one agent (`gpus: 2`), which 1-GPU work
would otherwise take every freed GPU from. A job that preemption makes room for (`rounds`) holds that room at once.
A retry prefers an agent other than the ones its earlier attempts failed on (a full disk, a broken driver), when one
fits now. Among the agents that fit, one holding the job's dataset version already goes first (`prefer`): a
preference only, so a job whose holders are busy is placed elsewhere rather than wait.

A rank that shares a GPU by memory (`gpu_memory` bytes, or `gpu_fraction` of the GPU's memory) goes to the fullest
GPU where it still fits (best fit, over every eligible agent's GPUs), so whole GPUs stay free for whole-GPU work; a
GPU with nothing on it costs that agent a free GPU slot, one already shared costs none. The sharing ranks of one
gang get a GPU each (NCCL refuses two ranks of one process group on one device). A share by memory counts against
its user's GPU quota as its bytes over the total of the GPU it is fitted to (`rank_amount`), checked once that GPU
is chosen. A whole-GPU rank takes GPUs with nothing on them only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

# What a rank sharing a GPU by memory counts for in quotas and usage while its GPU's total is not known: half a GPU.
UNKNOWN_SHARE = 0.5


@dataclass
class Capacity:
    node_id: str
    name: str
    free_slots: int
    free_gpu_slots: int = 0
    gpu_free_memory: int = 0
    load: float = 0.0  # CPU percent
    labels: dict[str, str] = field(default_factory=dict)
    workloads: frozenset[str] = frozenset()
    gpus: tuple[GpuRoom, ...] = ()  # per GPU, for tasks that share one by memory


@dataclass
class GpuRoom:
    """One GPU of an agent as the scheduler packs it: shared tasks by memory, or one task holding it whole."""

    index: int
    total_memory: int
    free_memory: int  # total less the larger of what NVML says is used and what shared tasks were promised
    whole: bool  # no task on it: a whole-GPU task may take it
    exclusive: bool = False  # a whole-GPU task holds it: no shared task may join


@dataclass(frozen=True)
class Request:
    job_id: str
    priority: int
    seq_no: int
    ranks: tuple[int, ...]  # task indexes to place
    workload: str = ""
    gpus: int = 0  # per rank
    gang: bool = False
    on: tuple[str, ...] = ()
    not_on: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    waiting_since: float = 0.0
    avoid: tuple[str, ...] = ()  # node ids where an attempt failed: used only when nothing else fits
    prefer: tuple[str, ...] = ()  # node ids holding its dataset version: first among those that fit
    user: str = ""  # the job's submitter: quotas and fair share
    preemptible: bool = False  # a more important job may stop its tasks (they checkpoint and are queued again)
    gpu_memory: int = 0  # > 0: each rank shares one GPU, using this many bytes of its memory
    gpu_fraction: float = 0.0  # > 0: each rank shares one GPU, using this share of its memory


@dataclass(frozen=True)
class Placement:
    job_id: str
    rank: int
    node_id: str
    gpu: int = -1  # a rank sharing a GPU: the GPU chosen for it (the agent's own best fit decides in the end)
    gpu_memory: int = 0  # and the bytes of its memory promised to it there


def shares(request: Request) -> bool:
    return bool(request.gpu_memory or request.gpu_fraction)


def share_of(request: Request, room: GpuRoom) -> int:
    """The bytes a sharing rank of `request` needs on this GPU (a fraction of an unknown total: more than any)."""
    if request.gpu_memory:
        return request.gpu_memory
    return max(1, int(room.total_memory * request.gpu_fraction)) if room.total_memory > 0 else 1 << 62


def best_room(request: Request, cap: Capacity, avoid: Collection[int] = ()) -> GpuRoom | None:
    """The fullest GPU of the agent that a sharing rank still fits on: not held whole, its free memory enough, and
    a GPU with nothing on it only while the agent has a free GPU slot for it. `avoid`: GPU indexes another rank of
    its gang took (NCCL refuses two ranks of one process group on one device)."""
    fitting = [
        g
        for g in cap.gpus
        if not g.exclusive
        and g.index not in avoid
        and g.free_memory >= share_of(request, g)
        and (not g.whole or (cap.free_gpu_slots >= 1 and cap.free_slots >= 1))
    ]
    return min(fitting, key=lambda g: (g.free_memory - share_of(request, g), g.index), default=None)


def shareable(caps: Iterable[Capacity]) -> bool:
    """Is there a GPU that sharing ranks use with memory left (joining it takes no slot)?"""
    return any(not g.whole and not g.exclusive and g.free_memory > 0 for c in caps for g in c.gpus)


def _copy(cap: Capacity) -> Capacity:
    return replace(cap, labels=dict(cap.labels), gpus=tuple(replace(g) for g in cap.gpus))


def matches(ref: str, cap: Capacity) -> bool:
    return ref in (cap.node_id, cap.name) or (len(ref) >= 6 and cap.node_id.startswith(ref))


def eligible(request: Request, cap: Capacity) -> bool:
    if request.workload and request.workload not in cap.workloads:
        return False
    if request.on and not any(matches(r, cap) for r in request.on):
        return False
    if any(matches(r, cap) for r in request.not_on):
        return False
    return all(cap.labels.get(k) == v for k, v in request.labels)


def _order(cap: Capacity) -> tuple[int, float, int, str]:
    # most free GPU memory, then least loaded, then most free slots
    return (-cap.gpu_free_memory, cap.load, -cap.free_slots, cap.node_id)


def rank_amount(request: Request, room: GpuRoom) -> float:
    """What a sharing rank of `request` counts for in quotas and usage on this GPU (gpu_share.gpu_amount's rule):
    its fraction, or its bytes over the GPU's total (at most 1), or UNKNOWN_SHARE when the total is unknown."""
    if request.gpu_fraction:
        return request.gpu_fraction
    return min(1.0, share_of(request, room) / room.total_memory) if room.total_memory > 0 else UNKNOWN_SHARE


def _fits(request: Request, cap: Capacity, avoid: Collection[int] = ()) -> bool:
    if shares(request):
        return best_room(request, cap, avoid) is not None
    if request.gpus:
        return cap.free_gpu_slots >= request.gpus and cap.free_slots >= request.gpus
    return cap.free_slots >= 1


def _take(request: Request, cap: Capacity, avoid: Collection[int] = ()) -> tuple[int, int]:
    """Take a rank's room on the agent; (the GPU, the bytes) for a sharing rank, else (-1, 0)."""
    if shares(request):
        room = best_room(request, cap, avoid)
        assert room is not None  # _fits said so
        need = share_of(request, room)
        if room.whole:
            room.whole = False
            cap.free_slots -= 1
            cap.free_gpu_slots -= 1
        room.free_memory -= need
        cap.gpu_free_memory -= need
        return room.index, need
    if not request.gpus:
        cap.free_slots -= 1
        return -1, 0
    cap.free_slots -= request.gpus
    cap.free_gpu_slots -= request.gpus
    for room in [g for g in cap.gpus if g.whole][: request.gpus]:  # the whole GPUs it takes: no share joins them
        room.whole, room.exclusive = False, True
    return -1, 0


def _fit_order(request: Request, cap: Capacity, avoid: Collection[int] = ()) -> tuple[int, float, int, str]:
    """A sharing rank: the agent whose best GPU is left fullest (best fit across agents); others: _order."""
    if shares(request):
        room = best_room(request, cap, avoid)
        left = room.free_memory - share_of(request, room) if room is not None else 0
        return (left, cap.load, -cap.free_slots, cap.node_id)
    return _order(cap)


class Gate(Protocol):
    """Quotas (controller/quotas.py): how many of a request's ranks its user may place now, and why not all."""

    def allow(self, request: Request, amounts: Sequence[float] | None = None) -> tuple[int, str]:
        """`amounts`: the GPUs each of that many ranks takes where it was fitted (None: the request's own count)."""
        ...

    def took(self, request: Request, ranks: int, amounts: Sequence[float] | None = None) -> None: ...


def plan(
    requests: Iterable[Request],
    capacities: list[Capacity],
    now: float,
    reserve_after: float,
    *,
    ordered: bool = False,
    gate: Gate | None = None,
    held: dict[str, str] | None = None,
    rounds: Mapping[str, Collection[str]] | None = None,
    sharing: Callable[[], Iterable[Request]] | None = None,
) -> list[Placement]:
    """Where the requests' ranks go now. `ordered`: the requests come sorted already (priority, then FIFO), and
    are read only until every free slot is taken (a lazy iterable over a long queue costs what it places).
    `gate`: each request is placed only as far as its user's quota lets it (a gang whole or not at all); a request
    held back, wholly or in part, gets its reason in `held` (it waits, it reserves nothing). `rounds`: job id -> the
    agents where a preemption round stops tasks for it; while it does not fit, nothing behind it may use their room
    (its victims end one by one, and their own re-queued tasks would take it back), nor the room its ranks fit now.
    `sharing`: the queue's requests that share a GPU by memory, in the same order; once no slot is free only those
    can still be placed (joining a GPU already shared takes no slot), so plan() reads on from them instead of walking
    the rest of `requests` (one shared GPU with memory left would otherwise make every pass read the whole queue)."""
    # The caller's capacities are copied on first write only (a pass over 200 agents that places one task copied
    # all 200, and again per request: most of a draining queue's controller time in the scale simulation).
    caps = {c.node_id: c for c in capacities}
    owned: set[str] = set()

    def mine(node_id: str) -> Capacity:
        if node_id not in owned:
            caps[node_id] = _copy(caps[node_id])
            owned.add(node_id)
        return caps[node_id]

    out: list[Placement] = []
    free = sum(max(0, c.free_slots) for c in caps.values())
    if free <= 0 and not shareable(caps.values()):
        return out

    def stream() -> Iterator[Request]:
        read: set[str] = set()
        queue = iter(requests if ordered else sorted(requests, key=lambda r: (-r.priority, r.seq_no)))
        while free > 0 or sharing is None:
            request = next(queue, None)
            if request is None:
                return
            read.add(request.job_id)
            yield request
        for request in sharing():  # no slot left: only ranks joining a shared GPU, those not read yet
            if request.job_id not in read:
                read.add(request.job_id)
                yield request

    for request in stream():
        if free <= 0:
            if not shareable(caps.values()):
                break  # every slot is taken or reserved: nothing behind this request can be placed either
            if not shares(request):
                continue  # only ranks joining a GPU already shared can still be placed
        ranks = request.ranks
        # a share by memory counts its bytes over the total of the GPU it is fitted to: its GPU quota is checked then
        by_room = gate is not None and request.gpu_memory > 0 and not request.gpu_fraction
        if gate is not None:
            allowed, reason = gate.allow(request, [0.0] * len(ranks) if by_room else None)
            if allowed < len(ranks):
                if held is not None:
                    held[request.job_id] = reason
                if allowed <= 0:
                    continue
                ranks = ranks[:allowed]
        # A request that keeps what fits (no gang, no quota counted on the GPU it lands on) takes its room from the
        # pass's own capacities; the others try copies first (a gang is placed whole or not at all). Only agents
        # it fits now are looked at (most are full while a queue drains): taking room never makes it fit elsewhere.
        direct = not request.gang and not by_room
        sharer = shares(request)
        slots = 0 if sharer else max(1, request.gpus)  # what a rank takes (one joining a shared GPU: maybe none)
        room = {
            c.node_id: c if direct else _copy(c)
            for c in caps.values()
            if c.free_slots >= slots
            and (_fits(request, c) if sharer else c.free_gpu_slots >= request.gpus)
            and eligible(request, c)
        }
        chosen = []
        amounts: list[float] = []  # what each chosen rank counts for in quotas (a share: on its GPU)
        apart = request.gang and sharer  # a gang's sharing ranks: one GPU each (NCCL)
        used: dict[str, set[int]] = {}  # node id -> GPUs this gang's ranks took
        slots_taken = 0
        for rank in ranks:
            if sharer:  # the agent whose best GPU is left fullest
                fitting = [c for c in room.values() if _fits(request, c, used.get(c.node_id, ()))]
                best = min(
                    fitting,
                    key=lambda c: (
                        c.node_id in request.avoid,
                        c.node_id not in request.prefer,
                        _fit_order(request, c, used.get(c.node_id, ())),
                    ),
                    default=None,
                )
            else:
                fitting = [c for c in room.values() if c.free_slots >= slots and c.free_gpu_slots >= request.gpus]
                best = min(
                    fitting,
                    key=lambda c: (c.node_id in request.avoid, c.node_id not in request.prefer, _order(c)),
                    default=None,
                )
            if best is None:
                break
            if direct:
                best = room[best.node_id] = mine(best.node_id)
            slots_before = best.free_slots
            gpu, memory = _take(request, best, used.get(best.node_id, ()))
            slots_taken += slots_before - best.free_slots
            if gpu >= 0:
                amounts.append(rank_amount(request, next(g for g in best.gpus if g.index == gpu)))
                if apart:
                    used.setdefault(best.node_id, set()).add(gpu)
            chosen.append(Placement(request.job_id, rank, best.node_id, gpu, memory if direct else 0))
        if gate is not None and by_room and (chosen or request.gang):
            # a gang not fitted whole counts its other ranks as UNKNOWN_SHARE each (held, or it may reserve)
            wanted = [*amounts, *[UNKNOWN_SHARE] * (len(ranks) - len(chosen) if request.gang else 0)]
            allowed, reason = gate.allow(request, wanted)
            if allowed < len(wanted):
                if held is not None:
                    held[request.job_id] = reason
                if allowed <= 0:
                    continue
                chosen, amounts, ranks = chosen[:allowed], amounts[:allowed], ranks[:allowed]
        if len(chosen) == len(ranks) or (chosen and not request.gang):
            if direct:
                free -= slots_taken  # (a rank joining a shared GPU takes no slot)
            else:
                for p in chosen:
                    mine(p.node_id)
                chosen = _commit(request, caps, chosen, apart)
                free = sum(max(0, c.free_slots) for c in caps.values())
            out.extend(chosen)
            if gate is not None:
                gate.took(request, len(chosen), amounts if by_room else None)
        if len(chosen) < len(ranks):
            if (request.gang or request.gpus > 1) and now - request.waiting_since >= reserve_after:
                # Reserve: nobody behind it may use the slots it could use, nor join the GPUs shared there.
                for c in [c for c in caps.values() if eligible(request, c)]:
                    _reserve(mine(c.node_id))
                free = sum(max(0, c.free_slots) for c in caps.values())
            elif rounds and request.job_id in rounds:
                if request.gang and chosen:  # the room its ranks fit now, until its victims free the rest
                    for p in chosen:
                        mine(p.node_id)
                    _commit(request, caps, chosen, apart)
                for node in rounds[request.job_id]:
                    if node in caps:
                        _reserve(mine(node))
                free = sum(max(0, c.free_slots) for c in caps.values())
    return out


def _commit(request: Request, caps: dict[str, Capacity], chosen: list[Placement], apart: bool) -> list[Placement]:
    """Take the chosen ranks' room in `caps` (as the trial did: the same GPUs), with each rank's GPU and bytes."""
    used: dict[str, set[int]] = {}
    out = []
    for p in chosen:
        gpu, memory = _take(request, caps[p.node_id], used.get(p.node_id, ()))
        if apart and gpu >= 0:
            used.setdefault(p.node_id, set()).add(gpu)
        out.append(replace(p, gpu=gpu, gpu_memory=memory))
    return out


def _reserve(cap: Capacity) -> None:
    cap.free_slots = 0
    cap.free_gpu_slots = 0
    cap.gpus = tuple(replace(g, free_memory=0) for g in cap.gpus)


@dataclass(frozen=True)
class RankLayout:
    """Where a rank sits in its gang, as torchrun numbers it (LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, ...)."""

    local_rank: int
    local_world_size: int
    group_rank: int
    group_world_size: int


def rank_layout(nodes: dict[int, str]) -> dict[int, RankLayout]:
    """From rank -> agent: the ranks on one agent form a group, numbered in rank order; groups are numbered by
    their lowest rank, so rank 0 is always local rank 0 of group 0, as with torchrun."""
    groups: dict[str, list[int]] = {}
    for rank in sorted(nodes):
        groups.setdefault(nodes[rank], []).append(rank)
    ordered = sorted(groups.values(), key=lambda ranks: ranks[0])
    return {
        rank: RankLayout(local, len(ranks), group, len(ordered))
        for group, ranks in enumerate(ordered)
        for local, rank in enumerate(ranks)
    }
