"""Waking on demand: a capacity source that wakes sleeping agents (Wake-on-LAN) for queued work they could run.

Once a scheduling tick the placement loop offers it the head of the queue no online agent took (capacity.py). For
each such job, in order, it counts the agents already waking that could run it, and wakes more of the sleeping
ones that could (its workload, labels, GPUs and `on` constraints, judged on what each reported before it slept)
until the job's ranks are covered. Each agent is woken once per wake timeout; one that did not wake is tried
again only after a back-off (the timeout, doubling, at most an hour). The job says why it waits: "waking agent
NAME (magic packet sent N s ago)", or "agent NAME did not wake within N s; waiting for a free slot".

Pure logic over a `SleeperPort` (the fleet implements it): no I/O here, and `wake` never blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tensorfleet_desktop.controller.capacity import Waiting, plain_reason
from tensorfleet_desktop.controller.scheduler import Capacity, Request, eligible

#: A machine that did not wake is tried again after the wake timeout times 2**(failures-1), at most this long.
MAX_BACKOFF = 3600.0


@dataclass(frozen=True)
class Sleeper:
    """A sleeping (or waking) agent, with the capacity it had before it slept."""

    node_id: str
    name: str
    waking: bool  # a magic packet was sent and it has not answered yet
    capacity: Capacity
    wakeable: bool  # it reported an interface with Wake-on-LAN on
    last_wake_at: float = 0.0  # unix seconds of the last magic packet; 0: never
    error: str = ""  # why the last wake-up failed


class SleeperPort(Protocol):
    """What waking needs of the fleet."""

    wake_timeout: float

    def sleepers(self) -> list[Sleeper]: ...

    def wake_soon(self, node_id: str) -> None:
        """Start waking it (a magic packet sent in the background); never blocks."""
        ...


def _fits(request: Request, cap: Capacity) -> bool:
    return eligible(request, cap) and cap.free_gpu_slots >= request.gpus and cap.free_slots >= max(1, request.gpus)


def _ranks(request: Request, cap: Capacity) -> int:
    """How many of the request's ranks the agent could take."""
    per = max(1, request.gpus)
    by_slots = cap.free_slots // per
    by_gpus = cap.free_gpu_slots // request.gpus if request.gpus else by_slots
    return min(by_slots, by_gpus)


@dataclass
class WakeSource:
    """The CapacitySource that wakes sleeping agents (registered by the app)."""

    port: SleeperPort
    name: str = "wake-on-lan"
    _asked: dict[str, float] = field(default_factory=dict)  # node id -> unix time this source woke it
    _failures: dict[str, int] = field(default_factory=dict)
    _retry_at: dict[str, float] = field(default_factory=dict)

    def offer(self, waiting: Sequence[Waiting], online: Sequence[Capacity], now: float) -> dict[str, str]:
        sleepers = self.port.sleepers()
        if not sleepers:
            self._asked.clear()
            return {}
        self._account(sleepers, now)
        # on their way: waking, or asked within the wake timeout (its packet still being sent, or it could not be:
        # asked again only once _account has counted the failure and its back-off has passed)
        coming = {s.node_id: _copy(s.capacity) for s in sleepers if s.waking or s.node_id in self._asked}
        by_id = {s.node_id: s for s in sleepers}
        reasons: dict[str, str] = {}
        for item in waiting:
            request = item.request
            fit = [s for s in sleepers if _fits(request, s.capacity)]
            if not fit:
                continue
            need = len(request.ranks)
            chosen: list[str] = []
            for s in fit:  # agents on their way first
                cap = coming.get(s.node_id)
                if cap is not None and need > 0 and _fits(request, cap):
                    need -= _take(request, cap, need)
                    chosen.append(s.node_id)
            for s in fit:
                if need <= 0:
                    break
                if s.node_id in coming or not s.wakeable or now < self._retry_at.get(s.node_id, 0.0):
                    continue
                self.port.wake_soon(s.node_id)
                self._asked[s.node_id] = now
                coming[s.node_id] = cap = _copy(s.capacity)
                need -= _take(request, cap, need)
                chosen.append(s.node_id)
            if chosen:
                shown = [by_id[n] for n in chosen]
                reasons[request.job_id] = "; ".join(self._waking_text(s, now) for s in shown)
                continue
            failed = [s for s in fit if s.node_id in self._failures]
            if failed:
                s = failed[0]
                reasons[request.job_id] = (
                    f"agent {s.name} did not wake within {self.port.wake_timeout:g} s; {plain_reason(item, online)}"
                )
            elif not any(s.wakeable for s in fit):  # say why the machine that could run it stays asleep
                s = fit[0]
                reasons[request.job_id] = (
                    f"{plain_reason(item, online)}; agent {s.name} could, but it sleeps and reports no interface "
                    "with Wake-on-LAN on"
                )
        return reasons

    def _waking_text(self, s: Sleeper, now: float) -> str:
        sent = self._asked.get(s.node_id) or s.last_wake_at
        if not s.waking and now > sent:  # asked a tick ago or more, but no packet went out: say so, and why
            why = s.error or "no magic packet sent yet"
            return f"waking agent {s.name} (asked {max(0.0, now - sent):.0f} s ago; {why})"
        return f"waking agent {s.name} (magic packet sent {max(0.0, now - sent):.0f} s ago)"

    def _account(self, sleepers: list[Sleeper], now: float) -> None:
        """Agents this source woke that are asleep again after the timeout: a failure, and a back-off."""
        current = {s.node_id: s for s in sleepers}
        for node_id in list(self._asked):
            s = current.get(node_id)
            if s is None:  # it woke up (or was removed): forgive it
                del self._asked[node_id]
                self._failures.pop(node_id, None)
                self._retry_at.pop(node_id, None)
                continue
            if s.waking or now - self._asked[node_id] < self.port.wake_timeout:
                continue
            failures = self._failures.get(node_id, 0) + 1
            self._failures[node_id] = failures
            self._retry_at[node_id] = now + min(MAX_BACKOFF, self.port.wake_timeout * 2 ** (failures - 1))
            del self._asked[node_id]
        for node_id in list(self._failures):
            if node_id not in current:
                self._failures.pop(node_id, None)
                self._retry_at.pop(node_id, None)


def _copy(cap: Capacity) -> Capacity:
    return Capacity(**{**cap.__dict__, "labels": dict(cap.labels)})


def _take(request: Request, cap: Capacity, need: int) -> int:
    taken = min(need, _ranks(request, cap))
    cap.free_slots -= taken * max(1, request.gpus)
    cap.free_gpu_slots -= taken * request.gpus
    return taken
