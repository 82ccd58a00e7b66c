"""Capacity that is not online yet: what queued work waits for, and who can bring more.

The scheduling loop places work on the agents that answer now. Some capacity can be *made*: a sleeping
workstation woken by a magic packet, an allocation asked of a Slurm cluster. A CapacitySource is told, every
scheduling tick, which queued work no online agent took; it starts whatever brings more (never blocking the loop:
it schedules its own asyncio work) and says, per job, why that job waits ("waking agent desk-7", "waiting for Slurm
allocation 1234 (Resources)"). Jobs no source speaks for get a plain reason from `plain_reason`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tensorfleet_agent.core.sizes import format_size
from tensorfleet_desktop.controller.scheduler import Capacity, Request, eligible, shares

#: At most this many waiting jobs (in scheduling order) are offered to the sources each tick: a long queue costs
#: the same as a short one, and the head of the queue is what capacity would serve first.
DEMAND_SCAN = 64
#: A job placed within moments of its submit needs no extra capacity: it is offered only after waiting this long.
DEMAND_AFTER = 1.0


@dataclass(frozen=True)
class Waiting:
    """One queued job's unplaced ranks, as the scheduler asked for them."""

    request: Request
    name: str  # the job's name, for the sources' logs and reasons
    spec: dict[str, object]  # the normalised job spec (e.g. its "pool")
    waited: float  # seconds since it joined the queue


class CapacitySource(Protocol):
    """Brings capacity that is not online yet (Wake-on-LAN, a Slurm pool)."""

    name: str

    def offer(self, waiting: Sequence[Waiting], online: Sequence[Capacity], now: float) -> dict[str, str]:
        """See the work no online agent took this tick (and the online agents' capacity); start what brings more,
        without blocking. Returns job id -> why that job waits, for the jobs this source acts for."""
        ...


def plain_reason(waiting: Waiting, online: Sequence[Capacity]) -> str:
    """Why a job waits when no source acts for it, as a sentence the user can act on."""
    request = waiting.request
    if not any(eligible(request, c) for c in online):  # the first agent that could run it is enough
        what = f"workload {request.workload}" if request.workload else "this job"
        extra = []
        if request.gpus:
            extra.append(f"{request.gpus} GPU(s) per rank")
        if request.labels:
            extra.append("labels " + ", ".join(f"{k}={v}" for k, v in request.labels))
        if request.on:
            extra.append("on " + ", ".join(request.on))
        needs = f" ({'; '.join(extra)})" if extra else ""
        return f"no online agent can run {what}{needs}"
    ranks = len(request.ranks)
    if request.gang:
        return f"waiting for {ranks} free slots at once (a gang of {ranks} ranks)"
    if shares(request):
        share = format_size(request.gpu_memory) if request.gpu_memory else f"{request.gpu_fraction:.0%} of the memory"
        return f"waiting for a GPU with {share} free to share"
    return "waiting for a free slot"
