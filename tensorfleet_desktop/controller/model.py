"""Jobs and tasks as the controller keeps them (plain, mutable, JSON-serialisable)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from tensorfleet_agent.core.codec import copy_json


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class TaskRunState(enum.StrEnum):
    PENDING = "PENDING"  # waiting for a placement
    DISPATCHED = "DISPATCHED"  # RunTask sent / accepted, not yet running
    PREPARING = "PREPARING"  # a project task: the agent lays out its files and builds its env
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        return self in (TaskRunState.DISPATCHED, TaskRunState.PREPARING, TaskRunState.RUNNING)


@dataclass
class ArtifactInfo:
    sha256: str
    size: int
    kind: str
    name: str
    task_index: int
    step: int = 0  # a checkpoint's epoch/step
    created_at: float = 0.0  # when the controller heard of it (0: recorded before it was kept)
    attempt: int = 0  # the task's attempt that saved it (0: the controller's, or recorded before it was kept)


def attempt_id(job_id: str, index: int, attempt: int) -> str:
    """The id an attempt runs under on its agent: the job, the task's index and the attempt number."""
    return f"{job_id}-r{index}-a{attempt}"


def attempt_number(attempt_id: str) -> int:
    """The attempt number in an attempt id (0 when it is not one)."""
    _, sep, number = attempt_id.rpartition("-a")
    return int(number) if sep and number.isdigit() else 0


@dataclass
class JobTask:
    index: int  # rank within the job
    state: TaskRunState = TaskRunState.PENDING
    attempt: int = 0  # increases on every placement (retry or re-placement)
    agent_task_id: str = ""  # the current attempt's id on its agent
    node_id: str = ""
    cursor: int = 0  # last agent seq stored for the current attempt
    progress: float = 0.0
    failures: int = 0  # spends max_retries
    replacements: int = 0  # agent losses; a separate budget
    exit_cause: str = ""
    error: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    stale_attempts: list[str] = field(default_factory=list)  # earlier attempts that must never count
    metrics: dict[str, float] = field(default_factory=dict)  # last value per name, from the current attempt
    params: dict[str, Any] | None = None  # a sweep trial's hyperparameters (else the job's)
    sklearn_version: str = ""  # of the agent that ran the current attempt (shards must agree)
    stopping: bool = False  # asked to checkpoint and stop (the job is pausing); its end is not a failure
    failed_on: list[str] = field(default_factory=list)  # agents where an attempt failed: a retry prefers others
    retry_at: float = 0.0  # a failed task waits until then (back-off), so a quick failure cannot burn its retries
    environment: dict[str, Any] | None = None  # a project task's EnvironmentReady (key, cache_hit, ...) this attempt
    # how this attempt's dataset version got onto its agent (bytes by source, seconds, peers): the controller's
    # push, then the agent's DatasetTransfer event (ingest.py); None when it has none
    dataset_transfer: dict[str, Any] | None = None
    # a sweep trial that rode in a bundle (attempts.py): the agent task that ran it (its lineage; it has no attempt
    # id of its own); "" for a task that ran as its own attempt
    bundle: str = ""


@dataclass
class Job:
    id: str
    spec: dict[str, Any]  # the normalised job spec (see jobspec.JobSpec.to_dict)
    submitter: str
    seq_no: int  # FIFO order among equal priorities
    state: JobState = JobState.QUEUED
    tasks: list[JobTask] = field(default_factory=list)
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    queued_since: float = 0.0
    paused_at: float = 0.0  # when it was paused, while it is
    paused_for: float = 0.0  # seconds paused since its run started: not counted toward its timeout
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    model: dict[str, Any] | None = None
    last_event_seq: int = 0
    rendezvous: dict[str, Any] | None = None  # a gang's meeting point: rank 0's agent host and a port
    waiting: str = ""  # why it waits for a placement, as a sentence (placement._offer_demand); never stored

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.id)

    @property
    def mode(self) -> str:
        """How the job's tasks relate: "cv" folds and single tasks run independently, a "gang" all at once."""
        if self.spec.get("cv"):
            return "cv"
        if self.spec.get("sweep"):
            return "sweep"
        if self.spec.get("algorithm") == "random_forest" and len(self.tasks) > 1:
            return "shards"
        return "gang" if len(self.tasks) > 1 else ""

    @property
    def priority(self) -> int:
        return int(self.spec.get("priority", 0))

    @property
    def preemptible(self) -> bool:
        """Whether a more important job may stop its tasks: said in the spec, else true below the default priority
        (jobspec.JobSpec.preemptible)."""
        return bool(self.spec.get("preemptible", self.priority < 0))

    @property
    def progress(self) -> float:
        if self.state is JobState.SUCCEEDED:
            return 1.0
        sweep = self.spec.get("sweep")
        if sweep:
            done = sum(
                1
                for t in self.tasks
                if t.state in (TaskRunState.SUCCEEDED, TaskRunState.FAILED, TaskRunState.CANCELLED)
            )
            return min(1.0, done / max(1, int(sweep.get("budget") or sweep["trials"])))
        if not self.tasks:
            return 0.0
        return sum(1.0 if t.state is TaskRunState.SUCCEEDED else t.progress for t in self.tasks) / len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """A copy as it is now (the store writes it later, the job changes on), as dataclasses.asdict would make it
        but field by field: the store takes one on every change, so a 200-trial sweep's costs ~1.4 ms, not ~14."""
        body = self.summary_dict()
        body["tasks"] = [task_dict(t) for t in self.tasks]
        body["artifacts"] = [artifact_dict(a) for a in self.artifacts]
        return body

    def summary_dict(self) -> dict[str, Any]:
        """to_dict without the tasks and artifacts: what the store rewrites on every save (they have rows of their
        own, written when they change)."""
        body = {name: getattr(self, name) for name in _SUMMARY_FIELDS}
        body["state"] = self.state.value
        body["spec"] = copy_json(self.spec)
        body["metrics"] = dict(self.metrics)
        body["model"] = copy_json(self.model)
        body["rendezvous"] = copy_json(self.rendezvous)
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Job:
        body = dict(body)
        tasks = [JobTask(**{**t, "state": TaskRunState(t["state"])}) for t in body.pop("tasks", [])]
        artifacts = [ArtifactInfo(**a) for a in body.pop("artifacts", [])]
        return cls(**{**body, "state": JobState(body["state"]), "tasks": tasks, "artifacts": artifacts})


_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if f.name not in ("tasks", "artifacts"))
_TASK_FIELDS = tuple(f.name for f in dataclasses.fields(JobTask))
_ARTIFACT_FIELDS = tuple(f.name for f in dataclasses.fields(ArtifactInfo))


def artifact_dict(artifact: ArtifactInfo) -> dict[str, Any]:
    return {name: getattr(artifact, name) for name in _ARTIFACT_FIELDS}


def task_dict(task: JobTask) -> dict[str, Any]:
    body = {name: getattr(task, name) for name in _TASK_FIELDS}
    body["state"] = str(task.state)
    body["stale_attempts"] = list(task.stale_attempts)
    body["metrics"] = dict(task.metrics)
    body["params"] = copy_json(task.params)
    body["failed_on"] = list(task.failed_on)
    body["environment"] = copy_json(task.environment)
    body["dataset_transfer"] = copy_json(task.dataset_transfer)
    return body


@dataclass(frozen=True)
class JobEventRecord:
    """One entry of a job's event history (what WatchJob streams and the store keeps)."""

    job_id: str
    seq: int
    time: float
    kind: str  # job_state | task_state | progress | metric | log | artifact
    task_index: int = -1
    state: str = ""
    message: str = ""
    stream: str = ""
    step: int = 0
    name: str = ""
    value: float = 0.0
    wall_time: float = 0.0
    attempt_id: str = ""  # agent task id, for agent-originated events
    agent_seq: int = 0
