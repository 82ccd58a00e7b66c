"""ControllerService protobuf <-> the controller's plain objects (the only place both meet)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.rpc.convert import EXIT_CAUSE, LOG_STREAM, EnumMap
from tensorfleet_desktop.controller.core import job_summary
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState, RefusedService
from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord, JobState, TaskRunState

# The closed sets the API carries as enums; inside the code (and in the SDK's dicts) they stay these strings.
JOB_STATE = EnumMap(cpb.JobState.DESCRIPTOR, {s.value: cpb.JobState.Value(f"JOB_STATE_{s.name}") for s in JobState})
TASK_STATE = EnumMap(
    cpb.JobTaskState.DESCRIPTOR, {s.value: cpb.JobTaskState.Value(f"JOB_TASK_STATE_{s.name}") for s in TaskRunState}
)
JOB_EVENT_KIND = EnumMap(
    cpb.JobEventKind.DESCRIPTOR,
    {"job_state": cpb.JOB_EVENT_KIND_JOB_STATE, "task_state": cpb.JOB_EVENT_KIND_TASK_STATE,
     "progress": cpb.JOB_EVENT_KIND_PROGRESS, "metric": cpb.JOB_EVENT_KIND_METRIC, "log": cpb.JOB_EVENT_KIND_LOG,
     "artifact": cpb.JOB_EVENT_KIND_ARTIFACT},
)  # fmt: skip
#: REFUSED: an agent whose certificate is not accepted (fleet.AgentRecord.public_state), or a refused service.
AGENT_STATE = EnumMap(
    cpb.AgentState.DESCRIPTOR,
    {
        **{s.value: cpb.AgentState.Value(f"AGENT_STATE_{s.name}") for s in AgentState},
        "REFUSED": cpb.AGENT_STATE_REFUSED,
    },
)
AGENT_SOURCE = EnumMap(
    cpb.AgentSource.DESCRIPTOR,
    {"mdns": cpb.AGENT_SOURCE_MDNS, "manual": cpb.AGENT_SOURCE_MANUAL, "local": cpb.AGENT_SOURCE_LOCAL},
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


def job_to_pb(job: Job, agent_names: dict[str, str]) -> cpb.Job:
    s = job_summary(job)
    msg = cpb.Job(
        id=job.id,
        name=job.name,
        state=JOB_STATE.to_pb(job.state.value, "state"),
        progress=s["progress"],
        tasks=cpb.TaskCounts(**s["tasks"]),
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
                progress=1.0 if t.state is TaskRunState.SUCCEEDED else t.progress,
                exit_cause=EXIT_CAUSE.to_pb(t.exit_cause, "exit_cause"),
                error=t.error,
                agent_task_id=t.agent_task_id,
                failures=t.failures,
                replacements=t.replacements,
                params_json=json.dumps(t.params) if t.params is not None else "",
                metrics=t.metrics,
                started_at=t.started_at,
                finished_at=t.finished_at,
            )
            for t in job.tasks
        ],
        artifacts=[artifact_to_pb(a) for a in job.artifacts],
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
            }
            for t in msg.task_list
        ],
        "artifacts": [artifact_from_pb(a) for a in msg.artifacts],
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
    )


def artifact_from_pb(a: cpb.Artifact) -> dict[str, Any]:
    """task_index -1: made by the controller (a merged model); created_at None: recorded before it was kept."""
    return {
        "sha256": a.sha256,
        "size": a.size,
        "kind": a.kind,
        "name": a.name,
        "task_index": a.task_index,
        "step": a.step,
        "created_at": a.created_at or None,
    }


def event_to_pb(record: JobEventRecord, job: Job | None, agent_names: dict[str, str]) -> cpb.JobEvent:
    msg = cpb.JobEvent(
        job_id=record.job_id,
        seq=record.seq,
        time=record.time,
        kind=JOB_EVENT_KIND.to_pb(record.kind, "kind"),
        task_index=record.task_index,
        message=record.message,
        stream=log_stream_to_pb(record.stream),
        step=record.step,
        name=record.name,
        value=record.value,
        wall_time=record.wall_time,
    )
    if record.kind == "job_state" and record.state:
        msg.job_state = JOB_STATE.to_pb(record.state, "job_state")
    elif record.kind == "task_state" and record.state:
        msg.task_state = TASK_STATE.to_pb(record.state, "task_state")
    elif record.kind == "artifact":
        msg.artifact_kind = record.state  # the record keeps an artifact's kind in `state`
    if job is not None and record.kind == "job_state":
        msg.job.CopyFrom(job_to_pb(job, agent_names))
    return msg


def _event_state(msg: cpb.JobEvent) -> str:
    """The SDK's one `state` key: a Job.state, a task's state, or an artifact's kind, by the event's kind."""
    if msg.kind == cpb.JOB_EVENT_KIND_JOB_STATE and msg.job_state:
        return JOB_STATE.from_pb(msg.job_state, "job_state")
    if msg.kind == cpb.JOB_EVENT_KIND_TASK_STATE and msg.task_state:
        return TASK_STATE.from_pb(msg.task_state, "task_state")
    return msg.artifact_kind if msg.kind == cpb.JOB_EVENT_KIND_ARTIFACT else ""


def event_from_pb(msg: cpb.JobEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": msg.job_id,
        "seq": msg.seq,
        "time": msg.time,
        "kind": JOB_EVENT_KIND.from_pb(msg.kind, "kind"),
        "task_index": msg.task_index,
        "state": _event_state(msg),
        "message": msg.message,
        "stream": log_stream_from_pb(msg.stream),
        "step": msg.step,
        "name": msg.name,
        "value": msg.value,
        "wall_time": msg.wall_time,
    }
    if msg.HasField("job"):
        body["job"] = job_from_pb(msg.job)
    return body


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
        "gpu_stats": [
            {
                "index": g.index,
                "utilization_percent": g.utilization_percent,
                "memory_used_bytes": g.memory_used_bytes,
                "memory_total_bytes": g.memory_total_bytes,
                "temperature_celsius": g.temperature_celsius,
                "power_watts": g.power_watts,
            }
            for g in msg.gpu_stats
        ],
        "running": list(msg.running),
        "metrics_port": msg.metrics_port,
    }


def dataset_to_pb(entry: dict[str, Any]) -> cpb.DatasetInfo:
    source = entry.get("source") or {}
    return cpb.DatasetInfo(
        name=entry["name"],
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
