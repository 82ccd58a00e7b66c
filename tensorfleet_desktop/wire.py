"""ControllerService protobuf <-> plain values: the controller's objects going out, the SDK's dicts coming in.

The one place both sides of the API meet, so the service and the SDK cannot drift apart. It imports no controller
module (the SDK loads it): the controller's types appear only under TYPE_CHECKING, and the closed sets are read
from the proto enums themselves (tests/unit/test_convert.py checks them against the controller's).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.rpc.convert import EXIT_CAUSE, LOG_STREAM, EnumMap, list_envs_from_pb
from tensorfleet_agent.rpc.convert import prune_envs_from_pb as convert_prune_envs_from_pb

if TYPE_CHECKING:
    from tensorfleet_desktop.controller.fleet import AgentRecord, RefusedService
    from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord

#: The most records one JobEvent carries (a replay of a long history goes out in messages of this many points).
MAX_BATCH = 1000


# The closed sets the API carries as enums; inside the code (and in the SDK's dicts) they stay these strings.
# The states are named as in the proto (UNSPECIFIED, first, left out).
JOB_STATE = EnumMap(
    cpb.JobState.DESCRIPTOR, {n.removeprefix("JOB_STATE_"): cpb.JobState.Value(n) for n in cpb.JobState.keys()[1:]}
)
TASK_STATE = EnumMap(
    cpb.JobTaskState.DESCRIPTOR,
    {n.removeprefix("JOB_TASK_STATE_"): cpb.JobTaskState.Value(n) for n in cpb.JobTaskState.keys()[1:]},
)
#: REFUSED: an agent whose certificate is not accepted (fleet.AgentRecord.public_state), or a refused service.
AGENT_STATE = EnumMap(
    cpb.AgentState.DESCRIPTOR,
    {n.removeprefix("AGENT_STATE_"): cpb.AgentState.Value(n) for n in cpb.AgentState.keys()[1:]},
)
AGENT_SOURCE = EnumMap(
    cpb.AgentSource.DESCRIPTOR,
    {
        "mdns": cpb.AGENT_SOURCE_MDNS,
        "manual": cpb.AGENT_SOURCE_MANUAL,
        "local": cpb.AGENT_SOURCE_LOCAL,
        "pool": cpb.AGENT_SOURCE_POOL,
    },
)
AGENT_EVENT_KIND = EnumMap(
    cpb.AgentEventKind.DESCRIPTOR,
    {"added": cpb.AGENT_EVENT_KIND_ADDED, "lost": cpb.AGENT_EVENT_KIND_LOST, "back": cpb.AGENT_EVENT_KIND_BACK,
     "telemetry": cpb.AGENT_EVENT_KIND_TELEMETRY, "updated": cpb.AGENT_EVENT_KIND_UPDATED,
     "removed": cpb.AGENT_EVENT_KIND_REMOVED, "paired": cpb.AGENT_EVENT_KIND_PAIRED},
)  # fmt: skip
DATASET_FORMAT = EnumMap(
    cpb.DatasetFormat.DESCRIPTOR, {"csv": cpb.DATASET_FORMAT_CSV, "parquet": cpb.DATASET_FORMAT_PARQUET}
)
DATASET_SOURCE = EnumMap(
    cpb.DatasetSource.DESCRIPTOR,
    {"upload": cpb.DATASET_SOURCE_UPLOAD, "s3": cpb.DATASET_SOURCE_S3, "file": cpb.DATASET_SOURCE_FILE,
     "builtin": cpb.DATASET_SOURCE_BUILTIN},
)  # fmt: skip
MODEL_FORMAT = EnumMap(
    cpb.ModelFormat.DESCRIPTOR,
    {"skops": cpb.MODEL_FORMAT_SKOPS, "safetensors": cpb.MODEL_FORMAT_SAFETENSORS, "pickle": cpb.MODEL_FORMAT_PICKLE,
     "joblib": cpb.MODEL_FORMAT_JOBLIB, "onnx": cpb.MODEL_FORMAT_ONNX},
)  # fmt: skip
#: "" is a file that is there and intact; a record never checked has no "blob" key (UNSPECIFIED on the wire).
BLOB_STATUS = EnumMap(
    cpb.BlobStatus.DESCRIPTOR,
    {"": cpb.BLOB_STATUS_OK, "MISSING": cpb.BLOB_STATUS_MISSING, "DAMAGED": cpb.BLOB_STATUS_DAMAGED},
)


def job_states_to_pb(states: tuple[str, ...] | list[str]) -> list[cpb.JobState.ValueType]:
    """ListJobs' filter; an unknown state is a ValidationError naming the states there are."""
    return [JOB_STATE.to_pb(s, "states") for s in states]


def job_states_from_pb(states: Iterable[int]) -> tuple[str, ...]:
    return tuple(JOB_STATE.from_pb(s, "states") for s in states)


def download_format_to_pb(fmt: str) -> cpb.DownloadModelRequest:
    """The format part of a DownloadModel request: "" (unset) is the stored format."""
    return cpb.DownloadModelRequest(format=MODEL_FORMAT.to_pb(fmt, "format")) if fmt else cpb.DownloadModelRequest()


def download_format_from_pb(request: cpb.DownloadModelRequest) -> str:
    """The stored format ("") when unset; UNSPECIFIED or an unknown number is a ValidationError."""
    return MODEL_FORMAT.from_pb(request.format, "format") if request.HasField("format") else ""


def log_stream_to_pb(stream: str) -> pb.LogStream.ValueType:
    return LOG_STREAM.to_pb(stream, "stream") if stream else pb.LOG_STREAM_UNSPECIFIED


def log_stream_from_pb(stream: int) -> str:
    return LOG_STREAM.from_pb(stream, "stream") if stream else ""


def info_from_pb(msg: cpb.ControllerInfo) -> dict[str, Any]:
    return {
        "protocol_version": msg.protocol_version,
        "version": msg.version,
        "data_dir": msg.data_dir,
        "store": msg.store_uri,
        "blobs": msg.blobs_uri,
        "pid": msg.pid,
        "started_at": msg.started_at,
        "local_agent_id": msg.local_agent_id,
        "fingerprint": msg.fingerprint,
        "cluster_id": msg.cluster_id,
        "caller": principal_from_pb(msg.caller),
    }


# ---------------------------------------------------------------- jobs


def job_to_pb(job: Job, agent_names: dict[str, str]) -> cpb.Job:
    msg = cpb.Job(
        id=job.id,
        name=job.name,
        state=JOB_STATE.to_pb(job.state.value, "state"),
        progress=round(job.progress, 4),
        tasks=cpb.TaskCounts(
            total=len(job.tasks),
            completed=sum(1 for t in job.tasks if t.state == "SUCCEEDED"),
            failed=sum(1 for t in job.tasks if t.state == "FAILED"),
            attempts=sum(t.attempt for t in job.tasks),
        ),
        metrics=job.metrics,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        spec_json=json.dumps(job.spec),
        submitter=job.submitter,
        algorithm=str(job.spec.get("algorithm", "")),
        dataset=str(job.spec.get("dataset", "")),
        priority=job.priority,
        task_list=[
            cpb.TaskInfo(
                index=t.index,
                state=TASK_STATE.to_pb(t.state.value, "state"),
                node_id=t.node_id,
                agent_name=agent_names.get(t.node_id, ""),
                attempt=t.attempt,
                progress=1.0 if t.state == "SUCCEEDED" else t.progress,
                exit_cause=EXIT_CAUSE.to_pb(t.exit_cause, "exit_cause"),
                error=t.error,
                agent_task_id=t.agent_task_id,
                failures=t.failures,
                replacements=t.replacements,
                params_json=json.dumps(t.params) if t.params is not None else "",
                metrics=t.metrics,
                started_at=t.started_at,
                finished_at=t.finished_at,
                environment=environment_to_pb(t.environment),
                dataset_transfer=transfer_to_pb(t.dataset_transfer),
            )
            for t in job.tasks
        ],
        artifacts=[artifact_to_pb(a) for a in job.artifacts],
        project=project_to_pb(job.spec),
        waiting=job.waiting if not job.state.terminal else "",
    )
    if job.model:
        msg.model.CopyFrom(
            cpb.ModelRef(
                name=str(job.model.get("name", "")),
                version=int(job.model.get("version", 0)),
                sha256=str(job.model.get("sha256", "")),
            )
        )
    return msg


def job_from_pb(msg: cpb.Job) -> dict[str, Any]:
    """A job as SDK/CLI users see it: the `status --json` keys plus details."""
    return {
        "id": msg.id,
        "name": msg.name,
        "state": JOB_STATE.from_pb(msg.state, "state"),
        "progress": msg.progress,
        "tasks": {
            "total": msg.tasks.total,
            "completed": msg.tasks.completed,
            "failed": msg.tasks.failed,
            "attempts": msg.tasks.attempts,
        },
        "metrics": dict(msg.metrics),
        "model": ({"name": msg.model.name, "version": msg.model.version} if msg.HasField("model") else None),
        "error": msg.error,
        "waiting": msg.waiting,
        "created_at": msg.created_at,
        "started_at": msg.started_at or None,
        "finished_at": msg.finished_at or None,
        "algorithm": msg.algorithm,
        "dataset": msg.dataset,
        "priority": msg.priority,
        "submitter": msg.submitter,
        "spec": json.loads(msg.spec_json) if msg.spec_json else {},
        "task_list": [
            {
                "index": t.index,
                "state": TASK_STATE.from_pb(t.state, "state"),
                "node_id": t.node_id,
                "agent": t.agent_name,
                "attempt": t.attempt,
                "progress": t.progress,
                "exit_cause": EXIT_CAUSE.from_pb(t.exit_cause, "exit_cause"),
                "error": t.error,
                "agent_task_id": t.agent_task_id,
                "failures": t.failures,
                "replacements": t.replacements,
                "params": json.loads(t.params_json) if t.params_json else None,
                "metrics": dict(t.metrics),
                "started_at": t.started_at or None,
                "finished_at": t.finished_at or None,
                "environment": environment_from_pb(t.environment) if t.HasField("environment") else None,
                "dataset_transfer": (transfer_from_pb(t.dataset_transfer) if t.HasField("dataset_transfer") else None),
            }
            for t in msg.task_list
        ],
        "artifacts": [artifact_from_pb(a) for a in msg.artifacts],
        "project": project_from_pb(msg.project) if msg.HasField("project") else None,
    }


#: A task's dataset_transfer (DatasetTransfer) as a dict: how its dataset version got onto its agent (issue 20).
TRANSFER_KEYS = (
    "bytes_from_peers",
    "bytes_from_controller",
    "bytes_from_store",
    "cached_bytes",
    "seconds",
    "peers_used",
    "peer_failures",
)


def transfer_to_pb(transfer: dict[str, Any] | None) -> pb.DatasetTransfer | None:
    """A task's dataset_transfer (ingest.py keeps it) as the message; None (unset) for a task without one."""
    if not transfer:
        return None
    return pb.DatasetTransfer(**{k: transfer[k] for k in TRANSFER_KEYS if k in transfer})


def transfer_from_pb(msg: pb.DatasetTransfer) -> dict[str, Any]:
    """{"bytes_from_peers", "bytes_from_controller", "bytes_from_store", "cached_bytes", "seconds", "peers_used",
    "peer_failures"}: `status JOB --json`'s per task "dataset_transfer"."""
    return {k: getattr(msg, k) for k in TRANSFER_KEYS}


CACHE_TREE_KEYS = ("name", "version", "content_id", "bytes", "files", "last_used", "in_use")


def cache_to_pb(cache: dict[str, Any]) -> pb.ListCacheResponse:
    """An agent's cache listing (AgentClient.list_cache's dict) as GetAgentCache answers it."""
    return pb.ListCacheResponse(
        blobs=cache["blobs"],
        blob_bytes=cache["blob_bytes"],
        limit_bytes=cache["limit_bytes"],
        trees=[pb.CacheTree(**{k: t[k] for k in CACHE_TREE_KEYS}) for t in cache["trees"]],
    )


def cache_from_pb(msg: pb.ListCacheResponse) -> dict[str, Any]:
    """An agent's blob cache (GetAgentCache): {"blobs", "blob_bytes", "limit_bytes", "trees": [{"name", "version",
    "content_id", "bytes", "files", "last_used", "in_use"}]}."""
    return {
        "blobs": msg.blobs,
        "blob_bytes": msg.blob_bytes,
        "limit_bytes": msg.limit_bytes,
        "trees": [{k: getattr(t, k) for k in CACHE_TREE_KEYS} for t in msg.trees],
    }


#: A task's environment (EnvironmentReady) as a dict: the keys the controller keeps and the SDK shows.
ENVIRONMENT_KEYS = ("key", "cache_hit", "build_seconds", "source", "python", "files", "bytes", "materialize_seconds")


def environment_to_pb(environment: dict[str, Any] | None) -> pb.EnvironmentReady | None:
    """A task's environment dict (ingest.py keeps it) as the message; None (left unset) for a task without one."""
    if not environment:
        return None
    return pb.EnvironmentReady(**{k: environment[k] for k in ENVIRONMENT_KEYS if k in environment})


def environment_from_pb(msg: pb.EnvironmentReady) -> dict[str, Any]:
    """{"key", "cache_hit", "build_seconds", "source", "python", "files", "bytes", "materialize_seconds"};
    key "" is the agent's own Python (env "none")."""
    return {
        "key": msg.key,
        "cache_hit": msg.cache_hit,
        "build_seconds": msg.build_seconds,
        "source": msg.source,
        "python": msg.python,
        "files": msg.files,
        "bytes": msg.bytes,
        "materialize_seconds": msg.materialize_seconds,
    }


def project_to_pb(spec: dict[str, Any]) -> cpb.ProjectInfo | None:
    """A project job's ProjectInfo from its (normalised) spec; None (unset) for every other job."""
    project = spec.get("project")
    if not isinstance(project, dict):
        return None
    git = project.get("git") or {}
    return cpb.ProjectInfo(
        manifest_id=str(project.get("manifest_id", "")),
        files=int(project.get("files", 0)),
        bytes=int(project.get("bytes", 0)),
        command=[str(a) for a in spec.get("command") or ()],
        env=str(project.get("env", "")),
        git_commit=str(git.get("commit", "")),
        git_branch=str(git.get("branch", "")),
        git_dirty=bool(git.get("dirty", False)),
        git_diff=str(git.get("diff", "")),
        git_diff_truncated=bool(git.get("diff_truncated", False)),
        git_untracked=[str(u) for u in git.get("untracked") or ()],
        git_remote=str(git.get("remote", "")),
        git_subdir=str(git.get("subdir", "")),
    )


def project_from_pb(msg: cpb.ProjectInfo) -> dict[str, Any]:
    """{"manifest_id", "files", "bytes", "command", "env", "git"}; "git" is None outside a git repository, else
    {"commit", "branch", "dirty", "diff", "diff_truncated", "untracked", "remote", "subdir"}."""
    in_git = bool(msg.git_commit or msg.git_branch or msg.git_dirty or msg.git_subdir or msg.git_remote)
    return {
        "manifest_id": msg.manifest_id,
        "files": msg.files,
        "bytes": msg.bytes,
        "command": list(msg.command),
        "env": msg.env,
        "git": {
            "commit": msg.git_commit,
            "branch": msg.git_branch,
            "dirty": msg.git_dirty,
            "diff": msg.git_diff,
            "diff_truncated": msg.git_diff_truncated,
            "untracked": list(msg.git_untracked),
            "remote": msg.git_remote,
            "subdir": msg.git_subdir,
        }
        if in_git
        else None,
    }


def jobs_change_from_pb(msg: cpb.JobsChange) -> dict[str, Any]:
    """{"snapshot": bool, "jobs": [...], "removed_job_ids": [...], "resume_token": str}: one WatchJobs message."""
    return {
        "snapshot": msg.snapshot,
        "jobs": [job_from_pb(j) for j in msg.jobs],
        "removed_job_ids": list(msg.removed_job_ids),
        "resume_token": msg.resume_token,
    }


def artifact_to_pb(a: ArtifactInfo) -> cpb.Artifact:
    return cpb.Artifact(
        sha256=a.sha256,
        size=a.size,
        kind=a.kind,
        name=a.name,
        task_index=a.task_index,
        step=a.step,
        created_at=a.created_at,
        attempt=a.attempt,
    )


def artifact_from_pb(a: cpb.Artifact) -> dict[str, Any]:
    """task_index -1: made by the controller (a merged model); created_at None: recorded before it was kept;
    attempt 0: the controller's, or recorded before attempts were."""
    return {
        "sha256": a.sha256,
        "size": a.size,
        "kind": a.kind,
        "name": a.name,
        "task_index": a.task_index,
        "step": a.step,
        "created_at": a.created_at or None,
        "attempt": a.attempt,
    }


# ---------------------------------------------------------------- a job's history


def metric_row_to_pb(record: JobEventRecord) -> cpb.MetricRow:
    return cpb.MetricRow(
        task_index=record.task_index,
        step=record.step,
        name=record.name,
        value=record.value,
        wall_time=record.wall_time,
        agent_task_id=record.attempt_id,
        seq=record.seq,
    )


def metric_row_from_pb(p: cpb.MetricRow) -> dict[str, Any]:
    return {
        "task_index": p.task_index,
        "step": p.step,
        "name": p.name,
        "value": p.value,
        "wall_time": p.wall_time,
        "agent_task_id": p.agent_task_id,
        "seq": p.seq,
    }


def log_row_to_pb(record: JobEventRecord) -> cpb.LogRow:
    return cpb.LogRow(
        task_index=record.task_index,
        time=record.time,
        stream=log_stream_to_pb(record.stream),
        line=record.message,
        seq=record.seq,
    )


def log_row_from_pb(r: cpb.LogRow) -> dict[str, Any]:
    return {"task_index": r.task_index, "time": r.time, "stream": log_stream_from_pb(r.stream), "line": r.line,
            "seq": r.seq}  # fmt: skip


def _body(msg: cpb.JobEvent, record: JobEventRecord, job: Callable[[], cpb.Job] | None) -> None:
    """Fill the event's one body from a stored record (the store keeps every kind in one flat shape); `job`: the job
    as it is now, for job_state events."""
    if record.kind == "job_state":
        msg.job_state.state = JOB_STATE.to_pb(record.state, "job_state")
        msg.job_state.message = record.message
        if job is not None:
            msg.job_state.job.CopyFrom(job())
    elif record.kind == "task_state":
        msg.task_state.CopyFrom(
            cpb.JobTaskStateChanged(
                task_index=record.task_index,
                state=TASK_STATE.to_pb(record.state, "task_state"),
                message=record.message,
            )
        )
    elif record.kind == "progress":
        msg.progress.CopyFrom(cpb.JobTaskProgress(task_index=record.task_index, fraction=record.value))
    elif record.kind == "metric":
        msg.metrics.points.append(metric_row_to_pb(record))
    elif record.kind == "log":
        msg.logs.lines.append(log_row_to_pb(record))
    elif record.kind == "artifact" and record.state == "checkpoint":  # the record keeps the kind in `state`
        msg.checkpoint.CopyFrom(
            cpb.JobCheckpointSaved(
                task_index=record.task_index,
                name=record.name,
                sha256=record.message,  # and the sha256 in `message`, the size in `value`
                size=int(record.value),
                step=record.step,
            )
        )
    elif record.kind == "artifact":
        msg.artifact.CopyFrom(
            cpb.JobArtifactSaved(
                task_index=record.task_index,
                name=record.name,
                kind=record.state,
                sha256=record.message,
                size=int(record.value),
            )
        )
    else:
        raise ValueError(f"a job event of unknown kind {record.kind!r}")


def job_events_to_pb(
    records: Sequence[JobEventRecord], job: Job | None, agent_names: dict[str, str]
) -> list[cpb.JobEvent]:
    """Records in seq order -> events: each run of consecutive metric points (or log lines) becomes one event of up
    to MAX_BATCH entries; every other record its own event. `job` (as it is now) rides on job_state events."""
    events: list[cpb.JobEvent] = []
    batch = 0
    converted: list[cpb.Job] = []

    def job_now() -> cpb.Job:  # converted once for all the job_state events of the call, and only if there is one
        if not converted:
            assert job is not None
            converted.append(job_to_pb(job, agent_names))
        return converted[0]

    now = job_now if job is not None else None
    for record in records:
        last = events[-1] if events else None
        if (
            last is not None
            and record.kind in ("metric", "log")
            and last.WhichOneof("body") == ("metrics" if record.kind == "metric" else "logs")
            and batch < MAX_BATCH
        ):
            _body(last, record, now)
            last.seq, last.time = record.seq, record.time
            batch += 1
            continue
        msg = cpb.JobEvent(job_id=record.job_id, seq=record.seq, time=record.time)
        _body(msg, record, now)
        events.append(msg)
        batch = 1
    return events


def job_event_from_pb(msg: cpb.JobEvent) -> dict[str, Any]:
    """{"job_id", "seq", "time", "kind"} and the keys of that kind:

    job_state: state, message, job · task_state: task_index, state, message · progress: task_index, fraction ·
    metrics: points (as Client.metrics rows) · logs: lines (as Client.logs rows) ·
    checkpoint: task_index, name, sha256, size, step · artifact: task_index, name, artifact_kind, sha256, size.
    """
    kind = msg.WhichOneof("body")
    head: dict[str, Any] = {"job_id": msg.job_id, "seq": msg.seq, "time": msg.time, "kind": kind or ""}
    if kind == "job_state":
        s = msg.job_state
        head |= {"state": JOB_STATE.from_pb(s.state, "job_state.state"), "message": s.message}
        if s.HasField("job"):
            head["job"] = job_from_pb(s.job)
    elif kind == "task_state":
        t = msg.task_state
        head |= {"task_index": t.task_index, "state": TASK_STATE.from_pb(t.state, "task_state.state"),
                 "message": t.message}  # fmt: skip
    elif kind == "progress":
        head |= {"task_index": msg.progress.task_index, "fraction": msg.progress.fraction}
    elif kind == "metrics":
        head["points"] = [metric_row_from_pb(p) for p in msg.metrics.points]
    elif kind == "logs":
        head["lines"] = [log_row_from_pb(r) for r in msg.logs.lines]
    elif kind == "checkpoint":
        c = msg.checkpoint
        head |= {"task_index": c.task_index, "name": c.name, "sha256": c.sha256, "size": c.size, "step": c.step}
    elif kind == "artifact":
        a = msg.artifact
        head |= {"task_index": a.task_index, "name": a.name, "artifact_kind": a.kind, "sha256": a.sha256,
                 "size": a.size}  # fmt: skip
    return head


# ---------------------------------------------------------------- agents


def agent_to_pb(record: AgentRecord) -> cpb.Agent:
    d = record.to_dict()
    d["state"], d["source"] = AGENT_STATE.to_pb(d["state"], "state"), AGENT_SOURCE.to_pb(d["source"], "source")
    return cpb.Agent(**d, metrics_port=record.info.metrics_port if record.info else 0)


def agent_event_to_pb(kind: str, agent: cpb.Agent, time: float) -> cpb.AgentEvent:
    return cpb.AgentEvent(kind=AGENT_EVENT_KIND.to_pb(kind, "kind"), agent=agent, time=time)


def agent_event_from_pb(msg: cpb.AgentEvent) -> dict[str, Any]:
    return {"kind": AGENT_EVENT_KIND.from_pb(msg.kind, "kind"), "agent": agent_from_pb(msg.agent), "time": msg.time}


def refused_to_pb(entry: RefusedService) -> cpb.RefusedService:
    return cpb.RefusedService(**entry.to_dict())


def refused_from_pb(msg: cpb.RefusedService) -> dict[str, Any]:
    """A refused service in the shape of an agent (state REFUSED), with the reason in `refused`."""
    return {
        "id": msg.id,
        "name": msg.name,
        "address": msg.address,
        "state": "REFUSED",
        "source": "mdns",
        "paired": False,
        "slots_total": 0,
        "slots_free": 0,
        "gpus": 0,
        "labels": {},
        "last_seen": msg.last_seen,
        "state_since": msg.first_seen,
        "fingerprint": "",
        "cluster_id": msg.cluster_id,
        "error": msg.reason,
        "refused": msg.reason,
        "instance": msg.instance,
    }


def agents_from_pb(msg: cpb.ListAgentsResponse) -> list[dict[str, Any]]:
    """The agents, then (when asked for) the refused services: state REFUSED, the reason in `refused`."""
    return [agent_from_pb(a) for a in msg.agents] + [refused_from_pb(r) for r in msg.refused]


def agent_from_pb(msg: cpb.Agent) -> dict[str, Any]:
    return {
        "id": msg.id,
        "name": msg.name,
        "address": msg.address,
        "state": AGENT_STATE.from_pb(msg.state, "state"),
        "source": AGENT_SOURCE.from_pb(msg.source, "source"),
        "paired": msg.paired,
        "slots_total": msg.slots_total,
        "slots_free": msg.slots_free,
        "gpus": msg.gpus,
        "labels": dict(msg.labels),
        "last_seen": msg.last_seen,
        "state_since": msg.state_since,
        "hostname": msg.hostname,
        "cpu_percent": msg.cpu_percent,
        "memory_used_bytes": msg.memory_used_bytes,
        "memory_total_bytes": msg.memory_total_bytes,
        "tasks_running": msg.tasks_running,
        "error": msg.error,
        "agent_version": msg.agent_version,
        "workloads": list(msg.workloads),
        "fingerprint": msg.fingerprint,
        "cluster_id": msg.cluster_id,
        "disk_free_bytes": msg.disk_free_bytes,
        "disk_total_bytes": msg.disk_total_bytes,
        "gpu_stats": [
            {
                "index": g.index,
                "utilization_percent": g.utilization_percent,
                "memory_used_bytes": g.memory_used_bytes,
                "memory_total_bytes": g.memory_total_bytes,
                "temperature_celsius": g.temperature_celsius,
                "power_watts": g.power_watts,
                "memory_reserved_bytes": g.memory_reserved_bytes,  # promised to tasks sharing it by memory
                "shared_tasks": g.shared_tasks,
                "exclusive": g.exclusive,  # a task holds it whole
            }
            for g in msg.gpu_stats
        ],
        "running": list(msg.running),
        "metrics_port": msg.metrics_port,
        "desk": _desk_from_pb(msg.desk) if msg.HasField("desk") else None,
        "interfaces": [
            {
                "name": i.name,
                "mac": i.mac,
                "ipv4": i.ipv4,
                "prefix_length": i.prefix_length,
                "broadcast": i.broadcast,
                "wake_on_lan": i.wake_on_lan,
                "wake_on_lan_source": i.wake_on_lan_source,
            }
            for i in msg.interfaces
        ],
        "wake_count": msg.wake_count,
        "last_wake_at": msg.last_wake_at,
        "pool": msg.pool,
        "allocation_id": msg.allocation_id,
    }


def _desk_from_pb(d: pb.DeskStatus) -> dict[str, Any]:
    """Desk mode's state as the fleet's `asdict(DeskStatus)` has it."""
    return {
        "owner_active": d.owner_active,
        "paused": d.paused,
        "reason": d.reason,
        "since": d.since,
        "idle_seconds": d.idle_seconds,
        "idle_threshold_seconds": d.idle_threshold_seconds,
        "schedule": d.schedule,
    }


# ---------------------------------------------------------------- an agent's project envs


def agent_envs_to_pb(envs: dict[str, Any]) -> pb.ListEnvsResponse:
    """An agent's env list as its AgentClient returns it (`convert.list_envs_from_pb`'s dict) as ListAgentEnvs'
    reply: the controller passes it on field for field."""
    return pb.ListEnvsResponse(
        envs=[
            pb.EnvSummary(
                key=e["key"],
                size_bytes=e["size"],
                last_used=e["last_used"],
                jobs=e["jobs"],
                python=e["python"],
                source=e["source"],
                build_seconds=e["build_seconds"],
                in_use=e["in_use"],
            )
            for e in envs["envs"]
        ],
        limit_bytes=envs["limit_bytes"],
    )


def agent_envs_from_pb(msg: pb.ListEnvsResponse) -> dict[str, Any]:
    """{"envs": [{"key", "size", "last_used", "jobs", "python", "source", "build_seconds", "in_use"}, ...] (most
    recently used first), "limit_bytes"}: the same dict the agent side uses (`convert.list_envs_from_pb`)."""
    return list_envs_from_pb(msg)


def prune_envs_to_pb(pruned: dict[str, Any]) -> pb.PruneEnvsResponse:
    return pb.PruneEnvsResponse(removed=list(pruned["removed"]), freed_bytes=int(pruned["freed_bytes"]))


def prune_envs_from_pb(msg: pb.PruneEnvsResponse) -> dict[str, Any]:
    """{"removed": [keys], "freed_bytes"}."""
    return convert_prune_envs_from_pb(msg)


# ---------------------------------------------------------------- datasets


def project_file_header_to_pb(sha256: str, size: int) -> cpb.ProjectFileChunk:
    return cpb.ProjectFileChunk(header=cpb.ProjectFileHeader(sha256=sha256, size=size))


def project_file_part_from_pb(msg: cpb.ProjectFileChunk) -> tuple[str, int] | bytes:
    """UploadBlobs' message as the controller core takes it: (sha256, size) starts a file, bytes continue it."""
    if msg.WhichOneof("part") == "header":
        return msg.header.sha256, msg.header.size
    return msg.data


def upload_blobs_from_pb(msg: cpb.UploadBlobsResponse) -> dict[str, int]:
    return {"files": msg.files, "bytes": msg.bytes}


def dataset_to_pb(
    entry: dict[str, Any] | None, versions: list[dict[str, Any]] | None = None, *, name: str = ""
) -> cpb.DatasetInfo:
    """A dataset: the table fields of `entry` (a version that is one CSV/Parquet file; None when it is none) and,
    given, its versions (oldest first) and latest version."""
    msg = cpb.DatasetInfo(name=entry["name"] if entry else name or (versions[-1]["name"] if versions else ""))
    if entry:
        source = entry.get("source") or {}
        msg.MergeFrom(
            cpb.DatasetInfo(
                sha256=entry["sha256"],
                filename=entry["filename"],
                format=DATASET_FORMAT.to_pb(entry["format"], "format"),
                rows=entry["rows"],
                columns=entry["columns"],
                size=entry["size"],
                created_at=entry["created_at"],
                source_filename=source.get("filename", ""),
                source_sha256=source.get("sha256", ""),
            )
        )
    if versions:
        msg.latest_version = int(versions[-1]["version"])
        msg.versions.extend(dataset_version_to_pb(v) for v in versions)
        if not entry:
            msg.created_at = float(versions[-1]["created_at"])
            msg.size = int(versions[-1]["bytes"])
    return msg


def builtin_dataset_to_pb(name: str) -> cpb.DatasetInfo:
    """A dataset shipped with the agents (iris, digits, ...): listed beside the uploads, never stored."""
    return cpb.DatasetInfo(name=name, builtin=True)


def dataset_version_to_pb(
    record: dict[str, Any], *, unchanged: bool = False, used_by: list[str] | None = None
) -> cpb.DatasetVersionInfo:
    return cpb.DatasetVersionInfo(
        name=record["name"],
        version=int(record["version"]),
        source=DATASET_SOURCE.to_pb(record["source"], "source"),
        url=record.get("url", ""),
        content_id=record["content_id"],
        files=int(record["files"]),
        bytes=int(record["bytes"]),
        created_at=float(record["created_at"]),
        created_by=record.get("created_by", ""),
        unchanged=unchanged,
        used_by=used_by or [],
    )


def dataset_version_from_pb(msg: cpb.DatasetVersionInfo) -> dict[str, Any]:
    """A version as clients see it: name, version, source (upload|s3|file|builtin), url, content_id, files, bytes,
    created_at, created_by, unchanged, uploaded_bytes, used_by."""
    return {
        "name": msg.name,
        "version": msg.version,
        "source": DATASET_SOURCE.from_pb(msg.source, "source"),
        "url": msg.url,
        "content_id": msg.content_id,
        "files": msg.files,
        "bytes": msg.bytes,
        "created_at": msg.created_at,
        "created_by": msg.created_by,
        "unchanged": msg.unchanged,
        "uploaded_bytes": msg.uploaded_bytes,
        "used_by": list(msg.used_by),
    }


def dataset_from_pb(msg: cpb.DatasetInfo) -> dict[str, Any]:
    """A dataset as clients see it. The table fields (sha256 ... source_sha256) are the latest version's when it is
    one CSV/Parquet file, else empty (format ""); versions oldest first; builtin for iris, digits, ..."""
    return {
        "name": msg.name,
        "sha256": msg.sha256,
        "filename": msg.filename,
        "format": DATASET_FORMAT.from_pb(msg.format, "format") if msg.format else "",
        "rows": msg.rows,
        "columns": list(msg.columns),
        "size": msg.size,
        "created_at": msg.created_at,
        "source_filename": msg.source_filename,
        "source_sha256": msg.source_sha256,
        "latest_version": msg.latest_version or (1 if msg.sha256 and not msg.builtin else 0),
        "versions": [dataset_version_from_pb(v) for v in msg.versions],
        "builtin": msg.builtin,
    }


def dataset_file_to_pb(item: dict[str, Any]) -> cpb.DatasetFile:
    return cpb.DatasetFile(
        path=item["path"], size=item["size"], sha256=item["sha256"], etag=item["etag"], chunks=item["chunks"]
    )


def get_dataset_from_pb(msg: cpb.GetDatasetResponse) -> dict[str, Any]:
    """{"dataset", "version", "files": [{"path", "size", "sha256", "etag", "chunks"}], "next_cursor"}."""
    return {
        "dataset": dataset_from_pb(msg.dataset),
        "version": dataset_version_from_pb(msg.version) if msg.HasField("version") else None,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "etag": f.etag, "chunks": f.chunks} for f in msg.files
        ],
        "next_cursor": msg.next_cursor,
    }


def dataset_file_data_from_pb(msg: cpb.DatasetFileData) -> dict[str, Any]:
    """ReadDatasetFile's answer: {"version", "file": {"path", "size", ...}, "data" (bytes), "truncated"}."""
    f = msg.file
    return {
        "version": dataset_version_from_pb(msg.version),
        "file": {"path": f.path, "size": f.size, "sha256": f.sha256, "etag": f.etag, "chunks": f.chunks},
        "data": bytes(msg.data),
        "truncated": msg.truncated,
    }


def preview_from_pb(msg: cpb.DatasetPreview) -> dict[str, Any]:
    return {
        "dataset": dataset_from_pb(msg.dataset),
        "columns": list(msg.columns),
        "rows": [list(row.values) for row in msg.rows],
    }


# ---------------------------------------------------------------- models


def _blob_status(record: dict[str, Any]) -> cpb.BlobStatus.ValueType:
    """UNSPECIFIED for a record whose blob was not checked (no "blob" key)."""
    return BLOB_STATUS.to_pb(record["blob"], "blob_status") if "blob" in record else cpb.BLOB_STATUS_UNSPECIFIED


def model_to_pb(record: dict[str, Any]) -> cpb.ModelVersion:
    return cpb.ModelVersion(
        name=record["name"],
        version=int(record["version"]),
        algorithm=record["algorithm"],
        hyperparameters_json=json.dumps(record.get("hyperparameters", {})),
        metrics={k: float(v) for k, v in record.get("metrics", {}).items()},
        aliases=record.get("aliases", []),
        tags=record.get("tags", []),
        description=record.get("description", ""),
        dataset_json=json.dumps(record.get("dataset", {})),
        job_id=record.get("job_id", ""),
        task_ids=record.get("task_ids", []),
        feature_names=[str(f) for f in record.get("feature_names", [])],
        classes=[str(c) for c in record.get("classes", [])],
        framework_versions={k: str(v) for k, v in record.get("framework_versions", {}).items()},
        size=int(record.get("size", 0)),
        sha256=record.get("sha256", ""),
        format=MODEL_FORMAT.to_pb(record["format"], "format"),
        created_at=float(record.get("created_at", 0.0)),
        blob_status=_blob_status(record),
    )


def model_from_pb(msg: cpb.ModelVersion) -> dict[str, Any]:
    return {
        "name": msg.name,
        "version": msg.version,
        "algorithm": msg.algorithm,
        "hyperparameters": json.loads(msg.hyperparameters_json or "{}"),
        "metrics": dict(msg.metrics),
        "aliases": list(msg.aliases),
        "tags": list(msg.tags),
        "description": msg.description,
        "dataset": json.loads(msg.dataset_json or "{}"),
        "job_id": msg.job_id,
        "task_ids": list(msg.task_ids),
        "feature_names": list(msg.feature_names),
        "classes": list(msg.classes),
        "framework_versions": dict(msg.framework_versions),
        "size": msg.size,
        "sha256": msg.sha256,
        "format": MODEL_FORMAT.from_pb(msg.format, "format"),
        "created_at": msg.created_at,
        "blob_status": BLOB_STATUS.from_pb(msg.blob_status, "blob_status") if msg.blob_status else "",
    }


def model_page_from_pb(msg: cpb.ListModelsResponse) -> dict[str, Any]:
    return {
        "models": [model_from_pb(m) for m in msg.models],
        "pagination": {"page": msg.page, "limit": msg.limit, "total": msg.total, "pages": msg.pages},
    }


def stats_to_pb(stats: dict[str, Any]) -> cpb.ModelStatsResponse:
    return cpb.ModelStatsResponse(
        total_models=stats["total_models"],
        algorithm_stats=[cpb.AlgorithmStats(**row) for row in stats["algorithm_stats"]],
        recent_models=[model_to_pb(r) for r in stats["recent_models"]],
    )


def stats_from_pb(msg: cpb.ModelStatsResponse) -> dict[str, Any]:
    return {
        "total_models": msg.total_models,
        "algorithm_stats": [
            {
                "algorithm": row.algorithm,
                "count": row.count,
                "avg_accuracy": row.avg_accuracy if row.HasField("avg_accuracy") else None,
                "best_accuracy": row.best_accuracy if row.HasField("best_accuracy") else None,
            }
            for row in msg.algorithm_stats
        ],
        "recent_models": [model_from_pb(r) for r in msg.recent_models],
    }


# ---------------------------------------------------------------- pools (the SDK's side; the controller's is its own)


def pool_spec_to_pb(spec: dict[str, Any]) -> cpb.Pool:
    """AddPool's request from the SDK's plain dict (the keys of pool_from_pb, without the answers-only ones)."""
    return cpb.Pool(
        name=spec["name"],
        kind=spec.get("kind", "slurm"),
        partition=spec.get("partition", ""),
        account=spec.get("account", ""),
        max_nodes=int(spec.get("max_nodes", 1)),
        time_limit=spec.get("time_limit", ""),
        sbatch_args=list(spec.get("sbatch_args", ())),
        idle_timeout_seconds=float(spec.get("idle_timeout_seconds", 0.0)),
        login=spec.get("login", ""),
    )


def pool_allocation_from_pb(msg: cpb.PoolAllocation) -> dict[str, Any]:
    return {
        "id": msg.id,
        "state": msg.state,
        "reason": msg.reason,
        "nodes": msg.nodes,
        "submitted_at": msg.submitted_at,
        "started_at": msg.started_at,
        "agents": list(msg.agents),
        "jobs": list(msg.jobs),
    }


def pool_from_pb(msg: cpb.Pool) -> dict[str, Any]:
    return {
        "name": msg.name,
        "kind": msg.kind,
        "partition": msg.partition,
        "account": msg.account,
        "max_nodes": msg.max_nodes,
        "time_limit": msg.time_limit,
        "sbatch_args": list(msg.sbatch_args),
        "idle_timeout_seconds": msg.idle_timeout_seconds,
        "login": msg.login,
        "allocations": [pool_allocation_from_pb(a) for a in msg.allocations],
        "created_at": msg.created_at,
        "error": msg.error,
    }


# ---- pools, the controller's side (its plain dicts: controller/pools/manager.py)


def pool_settings_from_pb(msg: cpb.Pool) -> dict[str, Any]:
    """AddPool's request as the plain values controller/pools/settings.check_settings reads."""
    return {
        "name": msg.name.strip(),
        "kind": msg.kind.strip() or "slurm",
        "partition": msg.partition,
        "account": msg.account.strip(),
        "max_nodes": msg.max_nodes,
        "time_limit": msg.time_limit,
        "sbatch_args": list(msg.sbatch_args),
        "idle_timeout_seconds": msg.idle_timeout_seconds or 300.0,
        "login": msg.login,
    }


def pool_to_pb(pool: dict[str, Any]) -> cpb.Pool:
    return cpb.Pool(
        name=pool["name"],
        kind=pool["kind"],
        partition=pool["partition"],
        account=pool["account"],
        max_nodes=pool["max_nodes"],
        time_limit=pool["time_limit"],
        sbatch_args=pool["sbatch_args"],
        idle_timeout_seconds=pool["idle_timeout_seconds"],
        login=pool["login"],
        allocations=[cpb.PoolAllocation(**a) for a in pool["allocations"]],
        created_at=pool["created_at"],
        error=pool["error"],
    )


def join_request_from_pb(msg: cpb.JoinClusterRequest) -> dict[str, str]:
    """JoinCluster's request as the fields of controller/pools/manager.JoinRequest."""
    return {
        "credential": msg.credential.strip(),
        "address": msg.address.strip(),
        "node_id": msg.node_id.strip(),
        "cert_fingerprint": msg.cert_fingerprint.strip(),
        "pool": msg.pool.strip(),
        "allocation_id": msg.allocation_id.strip(),
        "hostname": msg.hostname.strip(),
    }


# ---------------------------------------------------------------- team: callers, tokens, audit (issue 24)


def principal_to_pb(principal: Any) -> cpb.Principal:
    """principals.Principal (duck-typed: the core's dataclass) as its message."""
    return cpb.Principal(name=principal.name, role=principal.role, named_token=principal.named_token)


def principal_from_pb(msg: cpb.Principal) -> dict[str, Any]:
    return {"name": msg.name, "role": msg.role, "named_token": msg.named_token}


def token_info_to_pb(info: dict[str, Any]) -> cpb.TokenInfo:
    """tokens.TokenRecord.public() as its message."""
    return cpb.TokenInfo(**info)


def token_info_from_pb(msg: cpb.TokenInfo) -> dict[str, Any]:
    return {
        "name": msg.name,
        "role": msg.role,
        "created_at": msg.created_at,
        "created_by": msg.created_by,
        "last_used_at": msg.last_used_at,
        "revoked": msg.revoked,
        "prefix": msg.prefix,
    }


def token_secret_from_pb(msg: cpb.TokenSecret) -> dict[str, Any]:
    return {**token_info_from_pb(msg.info), "token": msg.token}


_AUDIT_FIELDS = ("seq", "time", "user", "role", "action", "target", "detail", "ok")


def audit_entry_to_pb(entry: dict[str, Any]) -> cpb.AuditEntry:
    """A stored audit entry (audit.AuditLog.record's dict) as its message; keys it lacks stay empty."""
    return cpb.AuditEntry(**{k: entry[k] for k in _AUDIT_FIELDS if k in entry})


def audit_entry_from_pb(msg: cpb.AuditEntry) -> dict[str, Any]:
    return {k: getattr(msg, k) for k in _AUDIT_FIELDS}


# ---- quotas and fair share (issue 24): plain dicts both sides (quotas.Quota.to_dict, team_usage.snapshot)

_LIMITS = ("gpus", "tasks", "queued")
_USAGE_FIELDS = ("user", "running_tasks", "running_gpus", "queued_jobs", "usage", "share")


def set_quota_to_pb(user: str, limits: dict[str, int]) -> cpb.SetQuotaRequest:
    """SetQuota's request: only the limits given are sent (-1 removes that limit)."""
    return cpb.SetQuotaRequest(user=user, **{k: int(v) for k, v in limits.items() if k in _LIMITS})


def set_quota_from_pb(msg: cpb.SetQuotaRequest) -> dict[str, Any]:
    """{"user", and each limit the request set}: a limit left out stays as it was."""
    given = {"gpus": msg.HasField("gpus"), "tasks": msg.HasField("tasks"), "queued": msg.HasField("queued")}
    return {"user": msg.user, **{k: getattr(msg, k) for k in _LIMITS if given[k]}}


def quota_to_pb(quota: dict[str, Any]) -> cpb.Quota:
    return cpb.Quota(user=quota["user"], **{k: int(quota[k]) for k in _LIMITS})


def quota_from_pb(msg: cpb.Quota) -> dict[str, Any]:
    return {"user": msg.user, **{k: getattr(msg, k) for k in _LIMITS}}


def quotas_to_pb(
    quotas: Iterable[dict[str, Any]], usage: Iterable[dict[str, Any]], half_life: float
) -> cpb.ListQuotasResponse:
    return cpb.ListQuotasResponse(
        quotas=[quota_to_pb(q) for q in quotas],
        usage=[cpb.UserUsage(**{k: u[k] for k in _USAGE_FIELDS}) for u in usage],
        half_life_seconds=half_life,
    )


def quotas_from_pb(msg: cpb.ListQuotasResponse) -> dict[str, Any]:
    """{"quotas": [{"user", "gpus", "tasks", "queued"}], "usage": [{"user", "running_tasks", "running_gpus",
    "queued_jobs", "usage", "share"}], "half_life_seconds"} (-1: no limit)."""
    return {
        "quotas": [quota_from_pb(q) for q in msg.quotas],
        "usage": [{k: getattr(u, k) for k in _USAGE_FIELDS} for u in msg.usage],
        "half_life_seconds": msg.half_life_seconds,
    }
