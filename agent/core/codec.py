"""JSON-ready dicts for the journal and the task files on disk.

The journal outlives the process that wrote it, so the format is explicit:
one flat object per event with a `kind` tag naming the payload.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    CheckpointSaved,
    EventPayload,
    Finished,
    LogLine,
    MetricPoint,
    Progress,
    Rendezvous,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
)

_KINDS: dict[str, type[Any]] = {
    "state": StateChanged,
    "log": LogLine,
    "metric": MetricPoint,
    "progress": Progress,
    "checkpoint": CheckpointSaved,
    "artifact": ArtifactReady,
    "finished": Finished,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def kind_of(payload: EventPayload) -> str:
    return _KIND_OF[type(payload)]


def event_to_dict(event: TaskEvent) -> dict[str, Any]:
    body: dict[str, Any] = {"seq": event.seq, "time": event.time, "kind": kind_of(event.payload)}
    for f in dataclasses.fields(event.payload):
        value = getattr(event.payload, f.name)
        body[f.name] = value.value if isinstance(value, TaskState) else value
    return body


def event_from_dict(task_id: str, body: dict[str, Any]) -> TaskEvent:
    cls = _KINDS[body["kind"]]
    kwargs = {f.name: body[f.name] for f in dataclasses.fields(cls) if f.name in body}
    for key in ("state", "status"):
        if key in kwargs:
            kwargs[key] = TaskState(kwargs[key])
    return TaskEvent(task_id=task_id, seq=int(body["seq"]), time=float(body["time"]), payload=cls(**kwargs))


def spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    body = dataclasses.asdict(spec)
    body["inputs"] = [dataclasses.asdict(ref) for ref in spec.inputs]
    return body


def spec_from_dict(body: dict[str, Any]) -> TaskSpec:
    rdv = body.get("rendezvous")
    return TaskSpec(
        task_id=body["task_id"],
        job_id=body.get("job_id", ""),
        workload=body["workload"],
        params=dict(body.get("params", {})),
        rank=int(body.get("rank", 0)),
        world_size=int(body.get("world_size", 1)),
        gpus=int(body.get("gpus", 0)),
        timeout_seconds=float(body.get("timeout_seconds", 0.0)),
        memory_limit_bytes=int(body.get("memory_limit_bytes", 0)),
        inputs=tuple(BlobRef(**ref) for ref in body.get("inputs", [])),
        env=dict(body.get("env", {})),
        attempt=int(body.get("attempt", 0)),
        rendezvous=Rendezvous(**rdv) if rdv else None,
        dataset=str(body.get("dataset", "")),
        dataset_params=dict(body.get("dataset_params", {})),
        partition=str(body.get("partition", "")),
        single_task=bool(body.get("single_task", False)),
        local_rank=int(body.get("local_rank", 0)),
        local_world_size=int(body.get("local_world_size", 0)),
        group_rank=int(body.get("group_rank", 0)),
        group_world_size=int(body.get("group_world_size", 0)),
        max_restarts=int(body.get("max_restarts", 0)),
    )
