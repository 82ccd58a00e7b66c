"""A job's history: every change is numbered, stored through the store's single writer and fanned out to the
job's watchers and to job listeners (a change a job list would show)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from tensorfleet_agent.security.secrets import redact
from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobTask
from tensorfleet_desktop.controller.ports import Clock
from tensorfleet_desktop.controller.store.base import JobStore

log = logging.getLogger(__name__)

JobListener = Callable[[Job], None]
REPLAY_PAGE = 5000  # events a watcher's replay reads from the store at a time
PROGRESS_EVERY = 0.25  # seconds: a job's "progress" job_state records, at most one per job this often (see progress)


class EventLog:
    def __init__(self, store: JobStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.gauges_stale = False  # a job changed state: the scheduler recounts the gauges on its next tick
        self._subscribers: dict[str, set[asyncio.Queue[JobEventRecord]]] = {}
        self._listeners: list[JobListener] = []
        self._summary_at: dict[str, float] = {}  # job id -> loop time of its last job_state record (progress)
        self._summary_due: dict[str, tuple[asyncio.TimerHandle, Job]] = {}  # job id -> its trailing "progress"

    def add_job_listener(self, fn: JobListener) -> Callable[[], None]:
        """`fn(job)` runs on the loop after every change a job list shows; call the result to unsubscribe."""
        self._listeners.append(fn)

        def unsubscribe() -> None:
            if fn in self._listeners:
                self._listeners.remove(fn)

        return unsubscribe

    def touched(self, job: Job) -> None:
        for fn in list(self._listeners):
            try:
                fn(job)
            except Exception:  # a listener's bug must not stop the job
                log.exception("job listener failed")

    def job_changed(
        self, job: Job, message: str, tasks: Sequence[JobTask] | None = None, *, saved: bool = False
    ) -> None:
        """The job's state or summary changed; `tasks`: only these of its tasks did (None: any may have). `saved`:
        the store has the job as it is already (a submit's insert), only the event is new."""
        self._record_summary(job, message or job.error)
        self._changed(job, tasks, saved)

    def _changed(self, job: Job, tasks: Sequence[JobTask] | None, saved: bool = False) -> None:
        """Saved (unless the store has it so already) and told to the job lists."""
        if not saved:
            self.store.save_job(job, tasks)
        self.gauges_stale = True  # counted on the scheduler's next tick, not once per change
        self.touched(job)

    def progress(self, job: Job, tasks: Sequence[JobTask]) -> None:
        """One of the job's tasks (a trial) ended and the job goes on: saved and shown to job lists at once, as
        job_changed does, but its "progress" job_state record (which carries the job's summary to its watchers,
        wire.job_event_to_pb) at most once per PROGRESS_EVERY: a 200-trial sweep recorded 200, each a copy of the
        whole job for every watcher. The one a burst holds back is recorded at the end of the period (the
        trailing edge), unless another job_state (its end, say) has carried the summary meanwhile."""
        self._changed(job, tasks)
        if job.id in self._summary_due:
            return  # the trailing record is on its way
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # off the loop: no timer to hold it back with
            self._record_summary(job, "progress")
            return
        wait = self._summary_at.get(job.id, -PROGRESS_EVERY) + PROGRESS_EVERY - loop.time()
        if wait <= 0:
            self._record_summary(job, "progress")
        else:
            self._summary_due[job.id] = (loop.call_later(wait, self._trailing_progress, job), job)

    def record_held_progress(self) -> None:
        """Record the progress records held back now: the controller stops, and their timers would fire after the
        store closed (a restart's replay would miss the summary after a job's last trials)."""
        for _, job in list(self._summary_due.values()):
            self._record_summary(job, "progress")

    def _trailing_progress(self, job: Job) -> None:
        self._summary_due.pop(job.id, None)
        if not job.state.terminal:  # an ended job's last record said it all
            self._record_summary(job, "progress")

    def _record_summary(self, job: Job, message: str) -> None:
        """A job_state record: the job's state and summary as they are now, which a held-back progress record
        would only repeat."""
        due = self._summary_due.pop(job.id, None)
        if due is not None:
            due[0].cancel()
        self.record(job, "job_state", {}, state=job.state.value, message=message)
        if job.state.terminal:
            self._summary_at.pop(job.id, None)
            return
        with contextlib.suppress(RuntimeError):  # off the loop: nothing is held back
            self._summary_at[job.id] = asyncio.get_running_loop().time()

    def task_event(self, job: Job, task: JobTask, message: str) -> None:
        self.record(job, "task_state", {"task_index": task.index}, state=task.state.value, message=message)
        self.store.save_job(job, (task,))  # its row and the job's summary, not every task's
        self.touched(job)

    def record(self, job: Job, kind: str, base: dict[str, Any], **fields: Any) -> None:
        job.last_event_seq += 1
        if "message" in fields:
            fields["message"] = redact(fields["message"])
        record = JobEventRecord(
            job_id=job.id, seq=job.last_event_seq, time=self.clock.time(), kind=kind, **{**base, **fields}
        )
        attempt = base.get("attempt_id", "")
        self.store.append_events([record], {attempt: int(base["agent_seq"])} if attempt else {})
        for queue in self._subscribers.get(job.id, ()):
            queue.put_nowait(record)

    async def history(self, job: Job, after_seq: int, ceiling: int) -> AsyncGenerator[JobEventRecord, None]:
        """The job's stored events after `after_seq` up to `ceiling`, read REPLAY_PAGE at a time (after a flush,
        so every one up to `ceiling` is there)."""
        await self.store.flush()
        last = after_seq
        while last < ceiling:
            page = await self.store.events(job.id, last, limit=REPLAY_PAGE)
            for record in page:
                if record.seq > ceiling:
                    return
                last = record.seq
                yield record
            if len(page) < REPLAY_PAGE or page[-1].seq >= ceiling:
                return

    async def watch(self, job: Job, after_seq: int = 0) -> AsyncGenerator[JobEventRecord, None]:
        """Replay the stored history after `after_seq`, then follow live until the job ends.

        The replay reads REPLAY_PAGE events at a time: a watcher of a 200k-event sweep gets its first events at
        once, and the controller never holds the whole history. (Reading the next page ahead while this one goes
        out was slower overall: the read and the sending fight over the GIL.) It reads the store only up to the
        seq the job had when we subscribed: every record up to there is committed (the flush), every record
        after it is in our queue, so the two meet with no gap and no repeat, even where the store shows a
        concurrent bulk insert out of order (MongoDB)."""
        queue: asyncio.Queue[JobEventRecord] = asyncio.Queue()
        self._subscribers.setdefault(job.id, set()).add(queue)
        ceiling = job.last_event_seq  # seqs above it reach us through the queue
        try:
            async with contextlib.aclosing(self.history(job, after_seq, ceiling)) as stored:
                async for record in stored:
                    yield record
            last = max(after_seq, ceiling)  # a seq the store lacks (an agent event it already had) never comes
            while True:
                if job.state.terminal and queue.empty() and last >= job.last_event_seq:
                    return
                try:
                    record = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                if record.seq > last:
                    last = record.seq
                    yield record
        finally:
            queues = self._subscribers.get(job.id)
            if queues is not None:
                queues.discard(queue)
                if not queues:  # no watcher left: nothing of the job stays here (a deleted job, a long history)
                    del self._subscribers[job.id]
