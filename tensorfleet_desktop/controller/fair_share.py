"""Fair share (issue 24): among jobs of equal priority, the user who used the cluster least lately goes first.

A user's usage is GPU-seconds (a shared GPU's fraction counts as that fraction; a CPU task counts one slot as one
"slot-second"), decayed with a half-life, so last week's burst does not count against anyone today. The queue's
key for a user adds what they hold right now, valued as the usage it will have added once it has run long
(amount x half_life / ln 2, the decayed integral of holding it forever): a user's steady holding and their decayed
usage are then in one currency, and in a single pass a user's 500 queued trials interleave with a colleague's one
job instead of taking every free slot first.

Pure bookkeeping, no I/O: the controller core persists UsageBook's records in the store's "usage" table.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Container, Iterable, Iterator, KeysView
from dataclasses import dataclass

DEFAULT_HALF_LIFE = 3600.0  # seconds: `[scheduler] fair_share_half_life`


class UsageBook:
    """Each user's decayed usage, as (value, when it was that) so that decay needs no periodic rewrite."""

    def __init__(self, half_life: float = DEFAULT_HALF_LIFE) -> None:
        if not half_life > 0:
            raise ValueError(f"the fair-share half-life must be > 0 seconds, got {half_life}")
        self.half_life = half_life
        self._values: dict[str, tuple[float, float]] = {}
        self.dirty: set[str] = set()  # users changed since the last save

    def value(self, user: str, now: float) -> float:
        value, at = self._values.get(user, (0.0, now))
        return float(value * 0.5 ** (max(0.0, now - at) / self.half_life))

    def add(self, user: str, amount: float, now: float) -> None:
        self._values[user] = (self.value(user, now) + amount, now)
        self.dirty.add(user)

    def users(self) -> list[str]:
        return sorted(self._values)

    def record(self, user: str) -> dict[str, float]:
        value, at = self._values.get(user, (0.0, 0.0))
        return {"usage": value, "at": at}

    def restore(self, records: dict[str, dict[str, object]]) -> None:
        """The stored records (`record`'s shape); a malformed one is skipped, never stopping the start."""
        for user, body in records.items():
            value, at = body.get("usage"), body.get("at")
            if isinstance(value, int | float) and isinstance(at, int | float) and math.isfinite(value) and value >= 0:
                self._values[user] = (float(value), float(at))


@dataclass(frozen=True)
class Holding:
    job_id: str
    index: int
    user: str
    gpus: float  # what the task counts for against a gpus quota (gpu_share.gpu_amount)

    @property
    def charge(self) -> float:
        """Usage per second: its GPUs, or one slot for a CPU task."""
        return self.gpus if self.gpus > 0 else 1.0


class Holdings:
    """The tasks placed and not yet ended, by attempt id: what each user runs now (quotas, the queue's key and
    usage). Kept up to date by the scheduling loop at every placement and checked against the tasks' states at every
    pass, so it costs what runs, not what waits."""

    def __init__(self) -> None:
        self.tasks: dict[str, Holding] = {}
        self._tasks: dict[str, int] = {}
        self._gpus: dict[str, float] = {}
        self._charge: dict[str, float] = {}

    def add(self, attempt: str, holding: Holding) -> None:
        self.drop(attempt)
        self.tasks[attempt] = holding
        user = holding.user
        self._tasks[user] = self._tasks.get(user, 0) + 1
        self._gpus[user] = self._gpus.get(user, 0.0) + holding.gpus
        self._charge[user] = self._charge.get(user, 0.0) + holding.charge

    def drop(self, attempt: str) -> None:
        holding = self.tasks.pop(attempt, None)
        if holding is None:
            return
        user = holding.user
        self._tasks[user] -= 1
        if self._tasks[user] <= 0:  # no float residue for a user who holds nothing
            del self._tasks[user], self._gpus[user], self._charge[user]
        else:
            self._gpus[user] -= holding.gpus
            self._charge[user] -= holding.charge

    def clear(self) -> None:
        self.tasks.clear()
        self._tasks.clear()
        self._gpus.clear()
        self._charge.clear()

    def running_tasks(self, user: str) -> int:
        return self._tasks.get(user, 0)

    def running_gpus(self, user: str) -> float:
        return max(0.0, self._gpus.get(user, 0.0))

    def charge(self, user: str) -> float:
        return max(0.0, self._charge.get(user, 0.0))

    def charges(self) -> dict[str, float]:
        return {user: max(0.0, c) for user, c in self._charge.items()}


class FairQueue:
    """The open jobs in scheduling order: priority (higher first); within a priority, per-user FIFO queues merged
    by the users' keys (lower first), a user's key read again each time one of their jobs was handed out, so a pass
    that places a user's task sees them move back. Ended jobs are skipped by the reader and dropped by `compact`."""

    def __init__(self) -> None:
        self._levels: dict[int, dict[str, list[tuple[int, str]]]] = {}
        self._where: dict[str, tuple[int, str]] = {}  # job id -> (priority, user)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def ids(self) -> KeysView[str]:
        return self._where.keys()

    def add(self, job_id: str, priority: int, seq_no: int, user: str) -> None:
        queue = self._levels.setdefault(priority, {}).setdefault(user, [])
        entry = (seq_no, job_id)
        if not queue or queue[-1] < entry:
            queue.append(entry)  # the usual case: submitted after everything queued
        else:
            bisect.insort(queue, entry)
        self._where[job_id] = (priority, user)

    def add_many(self, jobs: Iterable[tuple[str, int, int, str]]) -> None:
        """(job id, priority, seq_no, user) each: a restart's whole queue, sorted once per user."""
        touched: set[tuple[int, str]] = set()
        for job_id, priority, seq_no, user in jobs:
            queue = self._levels.setdefault(priority, {}).setdefault(user, [])
            entry = (seq_no, job_id)
            if queue and entry < queue[-1]:
                touched.add((priority, user))  # out of order: sorted once at the end
            queue.append(entry)  # the usual case, a pass's new jobs after everything queued: no sort
            self._where[job_id] = (priority, user)
        for priority, user in touched:
            self._levels[priority][user].sort()

    def _drop_ended_heads(self, alive: Container[str]) -> None:
        where = self._where
        for priority in list(self._levels):
            users = self._levels[priority]
            for user in list(users):
                queue = users[user]
                ended = 0
                while ended < len(queue) and queue[ended][1] not in alive:
                    where.pop(queue[ended][1], None)
                    ended += 1
                if ended == len(queue):
                    del users[user]
                elif ended:
                    del queue[:ended]
            if not users:
                del self._levels[priority]

    def compact(self, alive: Container[str]) -> None:
        """Forget the jobs not `alive` (ended)."""
        where = self._where
        for priority in list(self._levels):
            users = self._levels[priority]
            for user in list(users):
                kept = []
                for entry in users[user]:
                    if entry[1] in alive:
                        kept.append(entry)
                    else:
                        where.pop(entry[1], None)  # only what goes: the index is not rebuilt from every entry
                if kept:
                    users[user] = kept
                else:
                    del users[user]
            if not users:
                del self._levels[priority]

    def order(
        self, key: Callable[[str], float], cut: Container[str] = (), alive: Container[str] | None = None
    ) -> Iterator[str]:
        """Job ids in scheduling order; `key(user)` is asked when a user's next job enters the merge. A user in
        `cut` (read as the reader goes) has no more of their jobs handed out in this reading. With `alive`, the
        ended jobs at the head of each user's queue are dropped first: a FIFO that drains ends at its head, and a
        pass read past all of them (~300 of a 1,000-job drain's, each pass) until `compact`."""
        if alive is not None:
            self._drop_ended_heads(alive)
        for priority in sorted(self._levels, reverse=True):
            users = self._levels[priority]
            if len(users) == 1:  # one user at this priority: their FIFO as it is, no key to ask (most passes)
                ((user, queue),) = users.items()
                for _, job_id in queue:
                    if user in cut:
                        break
                    yield job_id
                continue
            heap = [(key(user), queue[0][0], user, 0) for user, queue in users.items() if queue and user not in cut]
            heapq.heapify(heap)
            while heap:
                _, _, user, i = heapq.heappop(heap)
                queue = users[user]
                yield queue[i][1]
                if i + 1 < len(queue) and user not in cut:
                    heapq.heappush(heap, (key(user), queue[i + 1][0], user, i + 1))


def queue_key(usage: float, holding: float, half_life: float) -> float:
    """A user's place in the fair-share merge: decayed usage plus what they hold now, valued as the decayed usage
    holding it for good would add (holding x half_life / ln 2)."""
    return usage + holding * half_life / math.log(2)
