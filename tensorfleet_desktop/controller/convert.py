"""ControllerService protobuf <-> the controller's plain objects (the only place both meet)."""

from __future__ import annotations

import json
from typing import Any

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.controller.core import job_summary
from tensorfleet_desktop.controller.fleet import AgentRecord, RefusedService
from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobEventRecord, TaskRunState


def job_to_pb(job: Job, agent_names: dict[str, str]) -> cpb.Job:
    s = job_summary(job)
    msg = cpb.Job(
        id=job.id,
        name=job.name,
        state=job.state.value,
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
                state=t.state.value,
                node_id=t.node_id,
                agent_name=agent_names.get(t.node_id, ""),
                attempt=t.attempt,
                progress=1.0 if t.state is TaskRunState.SUCCEEDED else t.progress,
                exit_cause=t.exit_cause,
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
        "state": msg.state,
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
                "state": t.state,
                "node_id": t.node_id,
                "agent": t.agent_name,
                "attempt": t.attempt,
                "progress": t.progress,
                "exit_cause": t.exit_cause,
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
        kind=record.kind,
        task_index=record.task_index,
        state=record.state,
        message=record.message,
        stream=record.stream,
        step=record.step,
        name=record.name,
        value=record.value,
        wall_time=record.wall_time,
    )
    if job is not None and record.kind == "job_state":
        msg.job.CopyFrom(job_to_pb(job, agent_names))
    return msg


def event_from_pb(msg: cpb.JobEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": msg.job_id,
        "seq": msg.seq,
        "time": msg.time,
        "kind": msg.kind,
        "task_index": msg.task_index,
        "state": msg.state,
        "message": msg.message,
        "stream": msg.stream,
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
    return cpb.Agent(**d, metrics_port=record.info.metrics_port if record.info else 0)


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
        "state": msg.state,
        "source": msg.source,
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
        format=entry["format"],
        rows=entry["rows"],
        columns=entry["columns"],
        size=entry["size"],
        created_at=entry["created_at"],
        source_filename=source.get("filename", ""),
        source_sha256=source.get("sha256", ""),
    )


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
        format=record.get("format", ""),
        created_at=float(record.get("created_at", 0.0)),
        blob_status=record.get("blob", ""),
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
        "format": msg.format,
        "created_at": msg.created_at,
        "blob_status": msg.blob_status,
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
