"""The job state machine: submit, the transitions a user asks for (cancel, pause, resume, retry), and what a
task's end means for its job (success, retry with back-off, re-placement, failure). No I/O and no asyncio task:
what happens on agents, in the blob store or in a sweep is asked of `JobEffects`; every change is recorded
through the EventLog."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Protocol

from tensorfleet_agent.core.types import ExitCause, Finished, TaskState
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller.errors import JobError, NotFoundError
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.job_index import JobTable
from tensorfleet_desktop.controller.jobspec import JobSpec
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobState, JobTask, TaskRunState
from tensorfleet_desktop.controller.ports import Clock

log = logging.getLogger(__name__)

_RETRY_BACKOFF, _RETRY_BACKOFF_MAX = 1.0, 30.0  # a failed task's first retry after 1 s, doubling, at most 30 s
CHECKPOINTING = ("torch", "script")  # workload categories that can checkpoint, stop on request and resume
#: How a task ends when its agent or worker went away rather than the task failing: re-placed, not retried.
LOST_CAUSES = ("agent_restarted", "cancelled", "drain_timeout", "worker_lost")
#: How a task ends when no retry and no other agent can help (a project's requirements cannot be resolved, its
#: command is not found or not executable in its env): the job fails at once, with the task's error.
PERMANENT_CAUSES = frozenset({ExitCause.ENV_BUILD, ExitCause.BAD_COMMAND, ExitCause.DATASET_CHANGED})


class JobEffects(Protocol):
    """What a transition needs done outside the state machine."""

    def abandon(self, job: Job, task: JobTask, reason: str) -> None:
        """Stop caring about the task's current attempt: cancel it on its agent, never count its result."""
        ...

    def checkpoint_and_stop(self, job: Job, task: JobTask) -> bool:
        """Ask the running attempt to save a checkpoint and stop; False when its agent cannot be asked."""
        ...

    def save_model(self, job: Job) -> None:
        """Register the job's model, then finish it (SUCCEEDED, or FAILED with why it could not be saved)."""
        ...

    def merge_shards(self, job: Job) -> None: ...

    def trial_result(self, job: Job, task: JobTask, value: float | None) -> None:
        """A sweep's trial ended with this score (None: failed or cancelled)."""
        ...

    def restart_sweep(self, job: Job) -> None:
        """A retried sweep starts over: its study is forgotten."""
        ...


class JobMachine:
    def __init__(self, events: EventLog, clock: Clock, metrics: ControllerMetrics, max_replacements: int) -> None:
        self.events = events
        self.clock = clock
        self.metrics = metrics
        self.max_replacements = max_replacements
        self.effects: JobEffects  # bound by the Controller once its collaborators exist
        self.jobs = JobTable()  # by id, and in list order (a jobs page reads the newest of an index)
        events.add_job_listener(self.jobs.touched)  # a job's new state files it under that state
        self.open: dict[str, Job] = {}  # not finished: what the scheduler and agent events look at
        self.joined: list[Job] = []  # put in `open` since the scheduler last took them (a pass reads only these)
        # the open jobs with a wall-clock timeout: a tick reads these, not every open job (10,000 queued jobs made
        # each tick a ~4 ms stall of the loop)
        self.timed: dict[str, Job] = {}
        self.registering: set[str] = set()  # jobs whose tasks are all done, saving their model
        self.wake = asyncio.Event()  # the scheduler runs a pass at once
        self._seq_no = 0

    def restore(self, jobs: list[Job]) -> None:
        """The stored jobs after a restart; a job stopped while saving its model carries on with that."""
        for job in jobs:
            self.jobs[job.id] = job
            if not job.state.terminal:
                self._opened(job)
            self._seq_no = max(self._seq_no, job.seq_no)
        for job in list(self.open.values()):
            for task in job.tasks:
                # a trial that rode in a bundle (attempts.py): the bundle is followed for its own trial only now
                if task.state.active and not task.agent_task_id:
                    task.state = TaskRunState.PENDING
            if job.mode != "sweep" and job.tasks and all(t.state is TaskRunState.SUCCEEDED for t in job.tasks):
                if job.mode == "shards" and not any(a.task_index == -1 for a in job.artifacts):
                    self.effects.merge_shards(job)
                    continue
                if job.mode == "cv" and not job.metrics:
                    job.metrics = cv_summary([t.metrics for t in job.tasks])
                self.succeed(job)

    # ---- queries

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            hits = [j for j in self.jobs.values() if len(job_id) >= 4 and j.id.startswith(job_id)]
            if len(hits) == 1:
                return hits[0]
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def list_jobs(self, states: tuple[str, ...] = (), limit: int = 0) -> list[Job]:
        """Newest first (jobs created in one instant in the order they came), of these states (any: none given)."""
        return self.jobs.newest(states, limit)

    # ---- commands

    def new_job(self, spec: JobSpec, submitter: str) -> Job:
        self._seq_no += 1
        now = self.clock.time()
        return Job(
            id=f"j{uuid.uuid4().hex[:10]}",
            spec=spec.to_dict(),
            submitter=submitter[:200],
            seq_no=self._seq_no,
            created_at=now,
            queued_since=now,
            tasks=[] if spec.sweep else [JobTask(index=i) for i in range(spec.cv or spec.num_workers)],
        )

    def admit(self, job: Job) -> None:
        """A stored new job joins the queue."""
        self.jobs[job.id] = job
        self._opened(job)
        self.metrics.submissions.inc()
        log.info("job %s (%s) submitted by %s", job.id, job.name, job.submitter)
        self.events.job_changed(job, "submitted", saved=True)  # Controller.submit stored it as it is (insert_job)
        self.wake.set()

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state.terminal:
            raise JobError(f"job {job.id} already ended ({job.state.value})")
        self.stop_tasks(job, "cancelled by the user", TaskRunState.CANCELLED)
        self.finish(job, JobState.CANCELLED, "cancelled by the user")
        return job

    def pause(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            raise JobError(f"only queued or running jobs can be paused; {job.id} is {job.state.value}")
        if job.id in self.registering:  # nothing runs any more: pausing would only hide the save's outcome
            raise JobError(f"all tasks of {job.id} are done; the job is saving its model")
        checkpointing = get_workload(str(job.spec["algorithm"])).category in CHECKPOINTING
        for task in job.tasks:
            running = checkpointing and task.state is TaskRunState.RUNNING and not task.stopping
            if running and self.effects.checkpoint_and_stop(job, task):
                task.stopping = True
                self.events.task_event(job, task, "pausing: saving a checkpoint, then stopping")
        self.stop_tasks(job, "paused by the user", TaskRunState.PENDING)
        job.state, job.paused_at = JobState.PAUSED, self.clock.time()
        self.events.job_changed(job, "paused")
        return job

    def resume(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state is not JobState.PAUSED:
            raise JobError(f"only paused jobs can be resumed; {job.id} is {job.state.value}")
        now = self.clock.time()
        if job.started_at and job.paused_at:  # a pause does not count toward its timeout (as Slurm's suspend)
            job.paused_for += max(0.0, now - job.paused_at)  # (a job paused before its start has no started_at)
        job.state, job.queued_since, job.paused_at = JobState.QUEUED, now, 0.0
        self.events.job_changed(job, "resumed")
        self.wake.set()
        return job

    def retry(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise JobError(f"only failed or cancelled jobs can be retried; {job.id} is {job.state.value}")
        for task in job.tasks:
            if task.state is not TaskRunState.SUCCEEDED:
                task.state, task.failures, task.replacements, task.error, task.exit_cause = (
                    TaskRunState.PENDING,
                    0,
                    0,
                    "",
                    "",
                )
                task.retry_at = 0.0
        if job.mode == "sweep":  # a retried sweep starts over
            job.tasks = []
            self.effects.restart_sweep(job)
        job.state, job.error, job.finished_at, job.queued_since = JobState.QUEUED, "", 0.0, self.clock.time()
        job.started_at, job.paused_at, job.paused_for = 0.0, 0.0, 0.0  # a new run: timed from its start
        self._opened(job)
        self.events.job_changed(job, "retried")
        self.wake.set()
        return job

    def remove(self, job: Job) -> None:
        """Forget an ended job (it is being deleted); `put_back` when its deletion could not be saved."""
        self.jobs.pop(job.id, None)
        self.open.pop(job.id, None)
        self.timed.pop(job.id, None)
        self.registering.discard(job.id)

    def put_back(self, job: Job) -> None:
        """An ended job whose deletion failed is known again."""
        self.jobs[job.id] = job

    # ---- transitions

    def stop_tasks(self, job: Job, reason: str, new_state: TaskRunState) -> None:
        for task in job.tasks:
            if task.stopping and new_state is TaskRunState.PENDING:
                continue  # already stopping at a checkpoint; it becomes PENDING when it ends
            if task.state.active:
                self.effects.abandon(job, task, reason)
                task.state = new_state
                self.events.task_event(job, task, reason)
            elif task.state is TaskRunState.PENDING and new_state is TaskRunState.CANCELLED:
                task.state = new_state

    def task_finished(self, job: Job, task: JobTask, fin: Finished, base: dict[str, Any] | None = None) -> None:
        """The current attempt ended (its agent slot is already released)."""
        task.exit_cause, task.error, task.finished_at = fin.exit_cause, fin.error, self.clock.time()
        base = base or {"task_index": task.index}
        record = self.events.record
        if task.stopping and fin.status is not TaskState.SUCCEEDED:
            task.stopping, task.state, task.agent_task_id = False, TaskRunState.PENDING, ""
            record(job, "task_state", base, state=task.state.value, message=f"paused ({fin.exit_cause}): {fin.error}")
            self.events.job_changed(job, "progress")
            self.wake.set()
            return
        task.stopping = False
        if fin.exit_cause == ExitCause.PREEMPTED and fin.status is not TaskState.SUCCEEDED:
            self.preempted(job, task, fin.error, base)
            return
        if fin.status is TaskState.SUCCEEDED:
            task.state, task.progress = TaskRunState.SUCCEEDED, 1.0
            record(job, "task_state", base, state=task.state.value, message="succeeded")
            if job.mode == "sweep":
                self.effects.trial_result(job, task, task.metrics.get(str(job.spec["sweep"]["metric"])))
                self.events.progress(job, (task,))
                self.wake.set()
                return
            if all(t.state is TaskRunState.SUCCEEDED for t in job.tasks):
                if job.mode == "shards":
                    self.effects.merge_shards(job)
                    return
                if job.mode == "cv":
                    job.metrics = cv_summary([t.metrics for t in job.tasks])
                self.succeed(job)
            else:
                self.events.progress(job, (task,))
            self.wake.set()
            return
        task.state = TaskRunState.FAILED
        record(job, "task_state", base, state=task.state.value, message=f"{fin.exit_cause}: {fin.error}")
        if fin.exit_cause in PERMANENT_CAUSES:
            self.fail_job(job, task, fin.error or f"rank {task.index} failed ({fin.exit_cause})")
        elif fin.exit_cause in LOST_CAUSES:
            self.replace(job, [task], f"rank {task.index} lost ({fin.exit_cause})")
        else:
            self.fail_task(job, task, f"rank {task.index} failed ({fin.exit_cause}): {fin.error}")
        self.wake.set()

    def preempted(self, job: Job, task: JobTask, reason: str, base: dict[str, Any]) -> None:
        """Its machine was taken back (a desk owner returned, a Slurm allocation ends): queued again at once, from
        its newest checkpoint where it saved one. Not a failure: no retry, no replacement, no back-off spent; a
        gang is stopped and queued again as a whole."""
        reason = reason or "its machine was taken back"
        message = reason if reason.startswith("preempted") else f"preempted: {reason}"  # the scheduler's says so
        task.state = TaskRunState.CANCELLED if job.state.terminal else TaskRunState.PENDING
        task.agent_task_id, task.retry_at = "", 0.0
        self.events.record(job, "task_state", base, state=task.state.value, message=message)
        if job.state.terminal:
            return
        log.info("job %s: rank %d %s; queued again", job.id, task.index, message)
        self.requeue(job, [task], f"rank {task.index} {message}")
        self.wake.set()

    def fail_job(self, job: Job, task: JobTask, reason: str) -> None:
        """A failure no retry or other agent can mend (PERMANENT_CAUSES, project files gone): the task's failure
        is counted, the other tasks are stopped and the job FAILs now with `reason` as its error."""
        task.failures += 1
        task.state = TaskRunState.FAILED
        if task.node_id and task.node_id not in task.failed_on:
            task.failed_on.append(task.node_id)
        if job.state.terminal:  # another rank's end came first
            return
        log.info("job %s: rank %d failed for good: %s", job.id, task.index, reason)
        self.stop_tasks(job, "another rank failed", TaskRunState.CANCELLED)
        self.finish(job, JobState.FAILED, reason)

    def fail_task(self, job: Job, task: JobTask, reason: str) -> None:
        """The task's own failure: spends one of max_retries, retried after a back-off on another agent if any."""
        task.failures += 1
        if task.node_id and task.node_id not in task.failed_on:
            task.failed_on.append(task.node_id)
        max_retries = int(job.spec.get("max_retries", 2))
        if task.failures > max_retries and job.mode == "sweep":
            task.state = TaskRunState.FAILED  # a failed trial is a result of the sweep, not its end
            self.effects.trial_result(job, task, None)
            self.events.task_event(job, task, f"trial failed: {reason}")
            self.wake.set()
            return
        if task.failures > max_retries:
            self.stop_tasks(job, "another rank failed", TaskRunState.CANCELLED)
            task.state = TaskRunState.FAILED
            self.finish(job, JobState.FAILED, f"{reason} (after {task.failures} attempt(s))")
            return
        delay = retry_delay(task.failures)
        task.retry_at = self.clock.time() + delay
        log.info("job %s: %s; retry %d of %d in %.0fs", job.id, reason, task.failures, max_retries, delay)
        self.requeue(job, [task], f"{reason}; retrying in {delay:.0f}s")

    def replace(self, job: Job, tasks: list[JobTask], reason: str) -> None:
        """Agent or worker lost: run elsewhere without spending max_retries (a separate budget)."""
        for task in tasks:
            task.replacements += 1
            if task.replacements > self.max_replacements:
                self.stop_tasks(job, "giving up", TaskRunState.CANCELLED)
                self.finish(job, JobState.FAILED, f"{reason}; re-placed {self.max_replacements} times, giving up")
                return
        self.requeue(job, tasks, reason)

    def requeue(self, job: Job, tasks: list[JobTask], reason: str) -> None:
        if job.state.terminal:
            return
        if job.mode == "gang":  # a gang restarts as a whole
            tasks = job.tasks
        for task in tasks:
            if task.state.active:
                self.effects.abandon(job, task, f"gang restart: {reason}" if job.mode == "gang" else reason)
            if task.state is not TaskRunState.PENDING:
                task.state = TaskRunState.PENDING
                task.agent_task_id = ""
                self.events.task_event(job, task, f"queued again: {reason}")
        if job.state is JobState.RUNNING and all(t.state is TaskRunState.PENDING for t in job.tasks):
            job.queued_since = self.clock.time()
        self.events.job_changed(job, "requeued")

    def lose(self, job: Job, tasks: list[JobTask], event: str, reason: str) -> None:
        """These tasks' agent is gone: their attempts are dropped and they run elsewhere."""
        for task in tasks:
            self.effects.abandon(job, task, event)
            task.state = TaskRunState.FAILED
            self.events.task_event(job, task, reason)
        self.replace(job, tasks, reason)

    def _opened(self, job: Job) -> None:
        """The job is open (queued, running or paused): the scheduler and the ticks see it."""
        self.open[job.id] = job
        self.joined.append(job)
        if job.spec.get("timeout"):
            self.timed[job.id] = job

    def check_timeouts(self) -> None:
        now = self.clock.time()
        for job in list(self.timed.values()):
            if job.state is not JobState.RUNNING:
                continue
            limit = job.spec["timeout"]
            if job.started_at and now - job.started_at - job.paused_for > float(limit):
                self.stop_tasks(job, "job timeout", TaskRunState.CANCELLED)
                self.finish(job, JobState.FAILED, f"timed out after {float(limit):g}s")

    def succeed(self, job: Job) -> None:
        """Register the job's model first, then mark it SUCCEEDED, so whoever waits for the job sees its version."""
        if job.state.terminal or job.id in self.registering:
            return  # already succeeded (a late duplicate event), or registering now
        self.registering.add(job.id)
        self.effects.save_model(job)

    def finish(self, job: Job, state: JobState, error: str) -> None:
        job.state, job.error, job.finished_at = state, error, self.clock.time()
        self.open.pop(job.id, None)
        self.timed.pop(job.id, None)
        log.info("job %s %s%s", job.id, state.value, f": {error}" if error else "")
        self.metrics.job_ended(job.id)
        self.events.job_changed(job, state.value.lower())

    def active_jobs(self) -> int:
        return sum(1 for j in self.open.values() if j.state is not JobState.PAUSED)


def retry_delay(failures: int) -> float:
    """Seconds a task waits before its next attempt after its `failures`-th failure: 1, 2, 4 … at most 30."""
    return min(_RETRY_BACKOFF_MAX, _RETRY_BACKOFF * 2.0 ** min(max(0, failures - 1), 32))


def cv_summary(folds: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation of each metric over the folds (the job's result)."""
    out: dict[str, float] = {}
    for name in sorted(set().union(*folds)):
        values = [f[name] for f in folds if name in f]
        mean = sum(values) / len(values)
        out[name] = mean
        out[f"{name}_std"] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return out
