"""What WatchJobs streams: every job change numbered, the recent ones remembered, so a client that reconnects with
its resume token gets exactly what it missed (or a fresh snapshot when the token is too old or from an earlier run
of the controller)."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tensorfleet_desktop.controller.model import Job

#: How many changes a resume token can reach back (a GUI away longer gets a snapshot instead).
KEEP = 10_000


class JobWatcher:
    """One WatchJobs stream's view: the ids of the jobs changed since it last took them."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._pending: set[str] = set()

    def note(self, job_id: str) -> None:
        self._pending.add(job_id)
        self.wake.set()

    def take(self) -> set[str]:
        changed, self._pending = self._pending, set()
        self.wake.clear()
        return changed


class JobFeed:
    def __init__(self, add_job_listener: Callable[[Callable[[Job], None]], Callable[[], None]]) -> None:
        self._epoch = uuid.uuid4().hex[:12]  # a token from another run of the controller is never trusted
        self._revision = 0
        self._recent: deque[tuple[int, str]] = deque(maxlen=KEEP)
        self._watchers: set[JobWatcher] = set()
        self.close = add_job_listener(self._changed)

    def _changed(self, job: Job) -> None:
        self._revision += 1
        if self._recent and self._recent[-1][1] == job.id:
            # a running job changes once per metric point: one entry per run of its changes, so a resume token
            # reaches back KEEP jobs' changes rather than KEEP points of the busiest job
            self._recent[-1] = (self._revision, job.id)
        else:
            self._recent.append((self._revision, job.id))
        for watcher in self._watchers:
            watcher.note(job.id)

    def token(self) -> str:
        """Everything up to now: resuming with it gets only later changes. Read it on the loop, right after
        taking a watcher's changes, so the two agree."""
        return f"{self._epoch}-{self._revision}"

    def changed_since(self, token: str) -> set[str] | None:
        """The ids of the jobs changed after `token`; None when the token cannot tell (unknown, or too old)."""
        epoch, _, text = token.partition("-")
        if epoch != self._epoch or not text.isdigit() or int(text) > self._revision:
            return None
        revision = int(text)
        oldest = self._recent[0][0] if self._recent else self._revision + 1
        if revision < oldest - 1:
            return None  # some of what came after it is no longer remembered
        return {job_id for number, job_id in self._recent if number > revision}

    @contextmanager
    def watcher(self) -> Iterator[JobWatcher]:
        watcher = JobWatcher()
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
