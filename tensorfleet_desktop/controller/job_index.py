"""The controller's jobs by id, kept in list order as well: a jobs page (gRPC ListJobs, GET /api/v1/jobs) is read
from the newest end of an index, not by sorting and filtering every job the controller knows (10,000 of them
while a queue drains, read on the event loop the scheduler and agent events share).

`JobTable` is the dict of jobs itself (JobMachine.jobs), so whatever adds or removes a job keeps the index in
step; a job's state change reaches it as every change a job list shows does, through the EventLog's job
listeners (`touched`). Two orders are served:
- ListJobs: newest `created_at` first, jobs created in the same instant in the order the controller took them
  in (what a stable sort of the dict gave);
- the HTTP pages: newest (`created_at`, id) first, the key its cursors name.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
from bisect import bisect_left, insort
from collections.abc import Collection, Generator, Iterable, Iterator
from typing import Any

from tensorfleet_desktop.controller.model import Job

Key = tuple[float, str]  # (created_at, id): the HTTP order, ascending here (the newest at the end)


class JobTable(dict[str, Job]):
    """The jobs by id (a dict), with each job's key filed in a sorted list of all jobs and one per state."""

    def __init__(self) -> None:
        super().__init__()
        self._all: list[Key] = []
        self._by_state: dict[str, list[Key]] = {}
        self._filed: dict[str, tuple[Key, str]] = {}  # id -> its key and the state it is filed under
        self._seq: dict[str, int] = {}  # id -> when it was added (the dict's own order)
        self._counter = itertools.count()

    # ---- keeping the index in step with the dict

    def __setitem__(self, job_id: str, job: Job) -> None:
        if job_id in self:
            self._unfile(job_id)  # a job replaced under its id keeps its place in the dict's order
        else:
            self._seq[job_id] = next(self._counter)
        super().__setitem__(job_id, job)
        self._file(job_id, job)

    def __delitem__(self, job_id: str) -> None:
        super().__delitem__(job_id)
        self._forget(job_id)

    _MISSING: Any = object()

    def pop(self, job_id: str, default: Any = _MISSING) -> Any:
        if job_id not in self:
            if default is JobTable._MISSING:
                raise KeyError(job_id)
            return default
        job = super().pop(job_id)
        self._forget(job_id)
        return job

    def popitem(self) -> tuple[str, Job]:
        job_id, job = super().popitem()
        self._forget(job_id)
        return job_id, job

    def clear(self) -> None:
        super().clear()
        self._all.clear()
        self._by_state.clear()
        self._filed.clear()
        self._seq.clear()

    def setdefault(self, job_id: str, default: Job) -> Job:
        if job_id not in self:
            self[job_id] = default
        return self[job_id]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for job_id, job in dict(*args, **kwargs).items():
            self[job_id] = job

    def __ior__(self, other: Any) -> JobTable:  # type: ignore[override,misc]
        self.update(other)
        return self

    def touched(self, job: Job) -> None:
        """A job listener (EventLog.add_job_listener): the job may have changed state; file it under its new one."""
        filed = self._filed.get(job.id)
        state = job.state.value
        if filed is not None and filed[1] != state and super().get(job.id) is job:
            key, before = filed  # its place among all jobs stays
            _remove(self._by_state[before], key)
            insort(self._by_state.setdefault(state, []), key)
            self._filed[job.id] = (key, state)

    def _file(self, job_id: str, job: Job) -> None:
        key = (job.created_at, job_id)
        state = job.state.value
        insort(self._all, key)
        insort(self._by_state.setdefault(state, []), key)
        self._filed[job_id] = (key, state)

    def _unfile(self, job_id: str) -> None:
        key, state = self._filed.pop(job_id)
        _remove(self._all, key)
        _remove(self._by_state[state], key)

    def _forget(self, job_id: str) -> None:
        self._unfile(job_id)
        del self._seq[job_id]

    def _lists(self, states: Collection[str]) -> list[list[Key]]:
        if not states:
            return [self._all]
        return [self._by_state[s] for s in sorted(set(states)) if self._by_state.get(s)]

    def _jobs(self, keys: Iterable[Key], states: Collection[str]) -> Generator[Job, None, None]:
        """The jobs of these keys that are in one of `states` (any: none given). One whose change of state was
        not told (a listener missed) is left out, as the filter of a sorted scan would have, and filed anew."""
        stale: list[Job] = []
        try:
            for key in keys:
                job = self[key[1]]
                if not states or job.state.value in states:
                    yield job
                else:
                    stale.append(job)
        finally:
            for job in stale:
                self.touched(job)

    # ---- ListJobs: newest first, ties in the order the jobs were added

    def newest(self, states: Collection[str] = (), limit: int = 0) -> list[Job]:
        """What `sorted(jobs, key=created_at, reverse=True)` filtered by `states` and cut to `limit` (0: all)
        gave, from the newest entries of the index only."""
        with contextlib.closing(self.newest_first(states)) as jobs:
            return list(itertools.islice(jobs, limit) if limit > 0 else jobs)

    def newest_first(self, states: Collection[str] = ()) -> Generator[Job, None, None]:
        """The jobs of these states (any: none given) in ListJobs' order, read lazily: take what you need at once,
        on the loop (the index changes with the jobs)."""
        group: list[Job] = []  # jobs created in the same instant: the dict's order among them
        with contextlib.closing(self._jobs(_descending(self._lists(states)), states)) as jobs:
            for job in jobs:
                if group and job.created_at != group[0].created_at:
                    yield from sorted(group, key=self._added)
                    group = []
                group.append(job)
        yield from sorted(group, key=self._added)

    def _added(self, job: Job) -> int:
        return self._seq[job.id]

    # ---- the HTTP pages: newest (created_at, id) first

    def ordered(self, states: Collection[str] = ()) -> list[Job]:
        """Every job of these states (all: none given), newest (created_at, id) first."""
        return list(self._jobs(_descending(self._lists(states)), states))

    def count(self, states: Collection[str] = ()) -> int:
        return sum(len(keys) for keys in self._lists(states))

    def page(self, states: Collection[str], start: int, size: int) -> list[Job]:
        """Jobs `start` .. `start + size` of `ordered(states)`."""
        lists = self._lists(states)
        if len(lists) == 1:  # one list: a slice of it (newest last)
            keys = lists[0]
            stop = max(0, len(keys) - start)
            chosen: Iterable[Key] = reversed(keys[max(0, stop - size) : stop])
        else:
            chosen = itertools.islice(_descending(lists), start, start + size)
        return list(self._jobs(chosen, states))

    def after(self, states: Collection[str], cursor: list[Any], size: int) -> tuple[int, list[Job]] | None:
        """Where the jobs older than a cursor's key [created_at, id] start in `ordered(states)`, and the first
        `size` of them; None when the cursor is not such a key (the caller compares it item by item)."""
        if len(cursor) != 2 or not isinstance(cursor[1], str) or not _finite(cursor[0]):
            return None
        bound = (cursor[0], cursor[1])
        lists = self._lists(states)
        positions = [bisect_left(keys, bound) for keys in lists]  # keys[:p] are older than the cursor
        start = sum(len(keys) - p for keys, p in zip(lists, positions, strict=True))
        older = [keys[max(0, p - size) : p] for keys, p in zip(lists, positions, strict=True)]
        return start, list(self._jobs(itertools.islice(_descending(older), size), states))


def _remove(keys: list[Key], key: Key) -> None:
    i = bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        del keys[i]


def _descending(lists: list[list[Key]]) -> Iterator[Key]:
    if len(lists) == 1:
        return reversed(lists[0])
    return heapq.merge(*(reversed(keys) for keys in lists), reverse=True)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
