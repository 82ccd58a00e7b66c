"""Agent events into the job: each attempt's events are deduplicated by the agent's sequence number against the
stored cursor (a replay after a reconnect is dropped), applied to the job's summary and recorded in its history."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tensorfleet_agent.core.types import (
    ArtifactReady,
    CheckpointSaved,
    DatasetTransfer,
    EnvironmentReady,
    ExitCause,
    Finished,
    LogLine,
    MetricPoint,
    Progress,
    StateChanged,
    TaskEvent,
    TaskState,
    TrialEnded,
)
from tensorfleet_desktop.controller.artifacts import Artifacts
from tensorfleet_desktop.controller.dataset_holders import Holders
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobTask, TaskRunState, attempt_number
from tensorfleet_desktop.controller.ports import Clock
from tensorfleet_desktop.controller.trials import SweepRunner

Base = dict[str, str | int]


class Ingest:
    def __init__(
        self,
        events: EventLog,
        artifacts: Artifacts,
        sweeps: SweepRunner,
        metrics: ControllerMetrics,
        clock: Clock,
        holders: Holders | None = None,
    ) -> None:
        self.holders = holders or Holders()
        self.events = events
        self.artifacts = artifacts
        self.sweeps = sweeps
        self.metrics = metrics
        self.clock = clock

    def apply(
        self, job: Job, lead: JobTask, event: TaskEvent, riders: Mapping[int, JobTask] | None = None
    ) -> tuple[JobTask, Finished, Base] | None:
        """Apply one event of the task's current attempt. A new end of the attempt, or of a trial riding in its
        bundle (`riders`, by index: the event's `trial` says whose it is), is returned with the task it ends and
        the fields its record carries, for the caller to settle; everything else is recorded here."""
        if event.seq <= lead.cursor:
            return None  # already stored: a replay after a reconnect
        lead.cursor = event.seq
        task = lead
        if event.trial >= 0 and event.trial != lead.index:
            rider = (riders or {}).get(event.trial)
            if rider is None or not rider.state.active:
                return None  # a trial no longer followed here (pruned, or queued again after a restart)
            task = rider
        p = event.payload
        base: Base = {"attempt_id": event.task_id, "agent_seq": event.seq, "task_index": task.index}
        record = self.events.record
        if isinstance(p, Finished):
            return lead, p, base
        if isinstance(p, TrialEnded):
            if task is lead:
                return None  # the task's own run ends with Finished
            status = TaskState.SUCCEEDED if p.ok else TaskState.FAILED
            cause = ExitCause.COMPLETED if p.ok else ExitCause.EXCEPTION
            lead.started_at = self.clock.time()  # the lead's own trial runs after its riders': its duration is its own
            others = (riders or {}).values()
            if lead.state is TaskRunState.DISPATCHED and all(r is task or not r.state.active for r in others):
                lead.state = TaskRunState.RUNNING  # the last rider is done: the lead's own trial starts
                lead_base: Base = {"task_index": lead.index}
                record(job, "task_state", lead_base, state=lead.state.value, message="its own trial starts")
            return task, Finished(status, cause, p.error, p.duration_seconds), base
        if isinstance(p, StateChanged):
            if p.state is TaskState.RUNNING and task is lead and any(r.state.active for r in (riders or {}).values()):
                # the bundle's worker started with its riders' trials: the lead's own runs last, it is not running
                record(job, "task_state", base, state=task.state.value, message=f"{p.message}: its bundle starts")
                self.events.touched(job)
                return None
            if p.state is TaskState.RUNNING:
                task.state = TaskRunState.RUNNING
                if task is not lead:  # a rider waited in its bundle since the dispatch: its duration is its own run
                    task.started_at = self.clock.time()
            elif p.state is TaskState.PREPARING and task.state is TaskRunState.DISPATCHED:
                task.state = TaskRunState.PREPARING  # a project task: its files laid out, its env built
            record(job, "task_state", base, state=task.state.value, message=p.message)
            if p.state is TaskState.PREPARING:
                self.events.store.save_job(job, (task,))
            self.events.touched(job)
        elif isinstance(p, EnvironmentReady):
            task.environment = environment_dict(p)
            record(job, "log", base, stream="controller", message=environment_line(task.index, p))
            self.events.store.save_job(job, (task,))  # kept with the task across a controller restart
            self.events.touched(job)
        elif isinstance(p, DatasetTransfer):
            task.dataset_transfer = transfer_dict(p, task.dataset_transfer)
            version = job.spec.get("dataset_version") or {}
            if version.get("source") == "upload" and task.node_id:
                self.holders.holds_version(task.node_id, str(version["content_id"]))  # a peer for the next readers
            record(job, "log", base, stream="controller", message=transfer_line(task.index, task.dataset_transfer))
            self.events.store.save_job(job, (task,))
            self.events.touched(job)
        elif isinstance(p, LogLine):
            record(job, "log", base, stream=p.stream, message=p.line)
        elif isinstance(p, MetricPoint):
            if job.mode != "gang" or task.index == 0:  # in a gang, rank 0 speaks for the job
                job.metrics[p.name] = p.value
                self.metrics.observe_metric(job.id, p.name, p.value)
            task.metrics[p.name] = p.value
            record(job, "metric", base, step=p.step, name=p.name, value=p.value, wall_time=p.wall_time)
            self.events.touched(job)
            self.sweeps.judge(job, task, p)
        elif isinstance(p, Progress):
            task.progress = p.fraction
            record(job, "progress", base, value=p.fraction)
            self.events.touched(job)
        elif isinstance(p, ArtifactReady | CheckpointSaved):
            self._saved(job, task, event, base, attempt=task.attempt if task is not lead else 0)
        return None

    def late(self, job: Job, task: JobTask, node: str, event: TaskEvent) -> bool:
        """An event of an attempt the controller moved on from (cancelled, or its gang restarted): only the files it
        saved on its way out (a project's outputs, collected when it ends) and the agent's own lines about them
        (what it stored, what it left out and why) are kept. True at its end."""
        p = event.payload
        if isinstance(p, Finished):
            return True
        base: Base = {"attempt_id": event.task_id, "agent_seq": event.seq, "task_index": task.index}
        if isinstance(p, ArtifactReady):
            self._saved(job, task, event, base, node)
            self.events.store.save_job(job, (task,))  # a finished job is saved no more otherwise
        elif isinstance(p, LogLine) and p.stream == "agent":
            self.events.record(job, "log", base, stream=p.stream, message=p.line)
        return False

    def _saved(self, job: Job, task: JobTask, event: TaskEvent, base: Base, node: str = "", attempt: int = 0) -> None:
        """A file the attempt saved: kept with the job (copied from `node`, the attempt's agent) and recorded;
        `attempt`: the task's attempt that saved it when the event's attempt id is another's (a bundle's)."""
        p = event.payload
        if not isinstance(p, ArtifactReady | CheckpointSaved):
            return
        kind = p.kind if isinstance(p, ArtifactReady) else "checkpoint"
        step = p.step if isinstance(p, CheckpointSaved) else 0
        attempt = attempt or attempt_number(event.task_id) or task.attempt  # a late one's is not the task's current
        saved = ArtifactInfo(p.sha256, p.size, kind, p.name, task.index, step, self.clock.time(), attempt)
        self.artifacts.on_saved(job, task, saved, node)
        self.events.record(job, "artifact", base, name=p.name, message=p.sha256, state=kind, value=float(p.size))
        self.events.touched(job)


def environment_dict(p: EnvironmentReady) -> dict[str, str | bool | int | float]:
    """What a task keeps of its EnvironmentReady (TaskInfo.environment, status --json's "environment")."""
    return {
        "key": p.key,
        "cache_hit": p.cache_hit,
        "build_seconds": round(p.build_seconds, 3),
        "source": p.source,
        "python": p.python,
        "files": p.files,
        "bytes": p.bytes,
        "materialize_seconds": round(p.materialize_seconds, 3),
    }


def transfer_dict(p: DatasetTransfer, pushed: dict[str, Any] | None) -> dict[str, Any]:
    """The task's dataset_transfer: the agent's account, with the bytes the controller pushed before RunTask
    (`pushed`, set at dispatch) as bytes_from_controller when the agent could not tell them from its cache."""
    body: dict[str, Any] = {
        "bytes_from_peers": p.bytes_from_peers,
        "bytes_from_controller": p.bytes_from_controller,
        "bytes_from_store": p.bytes_from_store,
        "cached_bytes": p.cached_bytes,
        "seconds": round(p.seconds, 3),
        "peers_used": p.peers_used,
        "peer_failures": p.peer_failures,
    }
    sent = int((pushed or {}).get("bytes_from_controller", 0))
    if sent and not p.bytes_from_controller:  # the agent found them in its cache: they were the controller's
        body["bytes_from_controller"] = sent
        body["cached_bytes"] = max(0, p.cached_bytes - sent)
    return body


def transfer_line(rank: int, t: dict[str, Any]) -> str:
    """The controller's log line once a task's dataset is mounted: where its bytes came from."""
    return (
        f"rank {rank}: dataset ready in {t['seconds']:.2f}s: {t['bytes_from_peers']} bytes from "
        f"{t['peers_used']} peer(s), {t['bytes_from_controller']} from the controller, {t['bytes_from_store']} "
        f"from the object store, {t['cached_bytes']} cached"
        + (f"; {t['peer_failures']} blob(s) a peer failed to serve" if t["peer_failures"] else "")
    )


def environment_line(rank: int, p: EnvironmentReady) -> str:
    """The controller's log line when a project task's env is ready: which one, and whether it was built."""
    if not p.key:
        env = f"the agent's own Python {p.python}".rstrip()
    elif p.cache_hit:
        env = f"env {p.key[:12]} from {p.source or 'its requirements'} (cached)"
    else:
        env = f"env {p.key[:12]} built from {p.source or 'its requirements'} in {p.build_seconds:.1f}s"
    return f"rank {rank}: {p.files} project file(s), {p.bytes} bytes laid out in {p.materialize_seconds:.2f}s; {env}"
