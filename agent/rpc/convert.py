"""Protobuf <-> core dataclasses: the only module where both meet."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import DecodeError

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    BundledTrial,
    CheckpointSaved,
    DatasetMount,
    DatasetTransfer,
    DeskStatus,
    EnvironmentReady,
    EventPayload,
    ExitCause,
    Finished,
    GpuInfo,
    GpuTelemetry,
    LogLine,
    MetricPoint,
    NetInterface,
    NodeInfo,
    PeerSource,
    PeerTicket,
    Progress,
    Rendezvous,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
    TaskSummary,
    Telemetry,
    TrialEnded,
    TrialFiles,
)
from tensorfleet_agent.core.validation import parse_params_json

V = TypeVar("V", bound=int)


class EnumMap(Generic[V]):
    """A closed set of plain values (what the code uses) <-> a proto enum (what travels), both ways.

    Numbers outside the map (UNSPECIFIED where it means nothing, or a value from a newer peer) are refused
    with a ValidationError that names the field and the values it takes, so a request gets INVALID_ARGUMENT.
    """

    def __init__(self, enum: EnumDescriptor, to_pb: Mapping[str, V]) -> None:
        self.enum = enum
        self._to_pb = dict(to_pb)
        self._from_pb = {number: value for value, number in self._to_pb.items()}
        if len(self._from_pb) != len(self._to_pb):
            raise ValueError(f"{enum.name}: two plain values share a number")

    @property
    def values(self) -> tuple[str, ...]:
        """The plain values, in enum order."""
        return tuple(self._from_pb[n] for n in sorted(self._from_pb))

    def name(self, number: int) -> str:
        value = self.enum.values_by_number.get(number)
        return value.name if value is not None else str(number)

    def allowed(self) -> str:
        return ", ".join(self.name(n) for n in sorted(self._from_pb))

    def to_pb(self, value: str, field: str) -> V:
        try:
            return self._to_pb[value]
        except KeyError:
            raise ValidationError(
                field, f"must be one of {', '.join(map(repr, self.values))}, got {value!r:.40}"
            ) from None

    def from_pb(self, number: int, field: str) -> str:
        try:
            return self._from_pb[number]  # type: ignore[index]
        except KeyError:
            raise ValidationError(field, f"must be one of {self.allowed()}, got {self.name(number)}") from None


#: "" is the whole job (no split).
PARTITION = EnumMap(
    pb.TaskPartition.DESCRIPTOR,
    {"": pb.TASK_PARTITION_WHOLE, "cv": pb.TASK_PARTITION_CV, "gang": pb.TASK_PARTITION_GANG,
     "shard": pb.TASK_PARTITION_SHARD},
)  # fmt: skip
#: "controller" lines come from the controller itself (JobEvent, LogRow), never from an agent.
LOG_STREAM = EnumMap(
    pb.LogStream.DESCRIPTOR,
    {"stdout": pb.LOG_STREAM_STDOUT, "stderr": pb.LOG_STREAM_STDERR, "agent": pb.LOG_STREAM_AGENT,
     "controller": pb.LOG_STREAM_CONTROLLER},
)  # fmt: skip
#: "" while a task runs; "rejected" and "pruned" are the controller's own causes.
EXIT_CAUSE = EnumMap(
    pb.ExitCause.DESCRIPTOR,
    {"": pb.EXIT_CAUSE_UNSPECIFIED, ExitCause.COMPLETED: pb.EXIT_CAUSE_COMPLETED,
     ExitCause.EXCEPTION: pb.EXIT_CAUSE_EXCEPTION, ExitCause.EXIT_CODE: pb.EXIT_CAUSE_EXIT_CODE,
     ExitCause.SIGNAL: pb.EXIT_CAUSE_SIGNAL, ExitCause.WORKER_LOST: pb.EXIT_CAUSE_WORKER_LOST,
     ExitCause.TIMEOUT: pb.EXIT_CAUSE_TIMEOUT, ExitCause.MEMORY_LIMIT: pb.EXIT_CAUSE_MEMORY_LIMIT,
     ExitCause.CANCELLED: pb.EXIT_CAUSE_CANCELLED, ExitCause.STOPPED: pb.EXIT_CAUSE_STOPPED,
     ExitCause.AGENT_RESTARTED: pb.EXIT_CAUSE_AGENT_RESTARTED, ExitCause.DRAIN_TIMEOUT: pb.EXIT_CAUSE_DRAIN_TIMEOUT,
     ExitCause.SETUP: pb.EXIT_CAUSE_SETUP, ExitCause.REJECTED: pb.EXIT_CAUSE_REJECTED,
     ExitCause.PRUNED: pb.EXIT_CAUSE_PRUNED, ExitCause.ENV_BUILD: pb.EXIT_CAUSE_ENV_BUILD,
     ExitCause.BAD_COMMAND: pb.EXIT_CAUSE_BAD_COMMAND, ExitCause.DATASET_CHANGED: pb.EXIT_CAUSE_DATASET_CHANGED,
     ExitCause.PREEMPTED: pb.EXIT_CAUSE_PREEMPTED},
)  # fmt: skip

_STATE_TO_PB = {
    TaskState.ACCEPTED: pb.TASK_STATE_ACCEPTED,
    TaskState.PREPARING: pb.TASK_STATE_PREPARING,
    TaskState.RUNNING: pb.TASK_STATE_RUNNING,
    TaskState.SUCCEEDED: pb.TASK_STATE_SUCCEEDED,
    TaskState.FAILED: pb.TASK_STATE_FAILED,
    TaskState.CANCELLED: pb.TASK_STATE_CANCELLED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


def state_to_pb(state: TaskState) -> pb.TaskState.ValueType:
    return _STATE_TO_PB[state]


def state_from_pb(value: int) -> TaskState:
    try:
        return _STATE_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown task state {value}") from None


# ---- task spec


def task_spec_to_pb(spec: TaskSpec) -> pb.TaskSpec:
    msg = pb.TaskSpec(
        task_id=spec.task_id,
        job_id=spec.job_id,
        workload=spec.workload,
        params_json=json.dumps(spec.params, separators=(",", ":")),
        rank=spec.rank,
        world_size=spec.world_size,
        gpus=spec.gpus,
        timeout_seconds=spec.timeout_seconds,
        memory_limit_bytes=spec.memory_limit_bytes,
        inputs=[pb.BlobRef(name=r.name, sha256=r.sha256) for r in spec.inputs],
        env=spec.env,
        attempt=spec.attempt,
        dataset=spec.dataset,
        dataset_params_json=json.dumps(spec.dataset_params, separators=(",", ":")) if spec.dataset_params else "",
        partition=PARTITION.to_pb(spec.partition, "spec.partition"),
        single_task=spec.single_task,
        local_rank=spec.local_rank,
        local_world_size=spec.local_world_size,
        group_rank=spec.group_rank,
        group_world_size=spec.group_world_size,
        max_restarts=spec.max_restarts,
        gpu_memory_bytes=spec.gpu_memory_bytes,
        trials=[
            pb.BundledTrial(index=t.index, params_json=json.dumps(t.params, separators=(",", ":"))) for t in spec.trials
        ],
    )
    if spec.dataset_mount is not None:
        mount = spec.dataset_mount
        msg.dataset_mount.CopyFrom(
            pb.DatasetMount(
                name=mount.name,
                version=mount.version,
                manifest_id=mount.manifest_id,
                listing_id=mount.listing_id,
                peers=[
                    pb.PeerSource(
                        node_id=p.node_id, address=p.address, cert_fingerprint=p.cert_fingerprint, sha256=p.sha256
                    )
                    for p in mount.peers
                ],
                ticket=mount.ticket,
                ticket_signature=mount.ticket_signature,
            )
        )
    if spec.trial_files is not None:
        files = spec.trial_files
        msg.trial_files.CopyFrom(pb.TrialFiles(keep=files.keep, metric=files.metric, maximize=files.maximize))
        if files.leader_index >= 0:
            msg.trial_files.leader_index, msg.trial_files.leader_score = files.leader_index, files.leader_score
    if spec.rendezvous is not None:
        msg.rendezvous.CopyFrom(
            pb.Rendezvous(master_addr=spec.rendezvous.master_addr, master_port=spec.rendezvous.master_port)
        )
    return msg


def task_spec_from_pb(msg: pb.TaskSpec) -> TaskSpec:
    """Structural conversion; raises ValidationError only for unparsable params_json."""
    return TaskSpec(
        task_id=msg.task_id,
        job_id=msg.job_id,
        workload=msg.workload,
        params=parse_params_json(msg.params_json),
        rank=msg.rank,
        world_size=msg.world_size,
        gpus=msg.gpus,
        timeout_seconds=msg.timeout_seconds,
        memory_limit_bytes=msg.memory_limit_bytes,
        inputs=tuple(BlobRef(r.name, r.sha256) for r in msg.inputs),
        env=dict(msg.env),
        attempt=msg.attempt,
        dataset=msg.dataset,
        dataset_params=parse_params_json(msg.dataset_params_json, "spec.dataset_params_json"),
        partition=PARTITION.from_pb(msg.partition, "spec.partition"),
        single_task=msg.single_task,
        local_rank=msg.local_rank,
        local_world_size=msg.local_world_size,
        group_rank=msg.group_rank,
        group_world_size=msg.group_world_size,
        max_restarts=msg.max_restarts,
        gpu_memory_bytes=msg.gpu_memory_bytes,
        trials=tuple(
            BundledTrial(t.index, parse_params_json(t.params_json, f"spec.trials[{i}].params_json"))
            for i, t in enumerate(msg.trials)
        ),
        trial_files=(
            TrialFiles(
                msg.trial_files.keep,
                msg.trial_files.metric,
                msg.trial_files.maximize,
                msg.trial_files.leader_index if msg.trial_files.HasField("leader_index") else -1,
                msg.trial_files.leader_score,
            )
            if msg.HasField("trial_files")
            else None
        ),
        rendezvous=(
            Rendezvous(msg.rendezvous.master_addr, msg.rendezvous.master_port) if msg.HasField("rendezvous") else None
        ),
        dataset_mount=(
            DatasetMount(
                msg.dataset_mount.name,
                msg.dataset_mount.version,
                msg.dataset_mount.manifest_id,
                msg.dataset_mount.listing_id,
                tuple(
                    PeerSource(p.node_id, p.address, p.cert_fingerprint, tuple(p.sha256))
                    for p in msg.dataset_mount.peers
                ),
                msg.dataset_mount.ticket,
                msg.dataset_mount.ticket_signature,
            )
            if msg.HasField("dataset_mount")
            else None
        ),
    )


# ---- node info and telemetry


def node_info_to_pb(info: NodeInfo) -> pb.NodeInfo:
    return pb.NodeInfo(
        protocol_version=info.protocol_version,
        node_id=info.node_id,
        name=info.name,
        hostname=info.hostname,
        os=info.os,
        python_version=info.python_version,
        torch_version=info.torch_version,
        sklearn_version=info.sklearn_version,
        cpu_count=info.cpu_count,
        memory_total_bytes=info.memory_total_bytes,
        disk_free_bytes=info.disk_free_bytes,
        gpus=[
            pb.GpuInfo(index=g.index, name=g.name, uuid=g.uuid, memory_total_bytes=g.memory_total_bytes)
            for g in info.gpus
        ],
        workloads=list(info.workloads),
        slots_total=info.slots_total,
        slots_free=info.slots_free,
        agent_version=info.agent_version,
        labels=info.labels,
        draining=info.draining,
        cluster_id=info.cluster_id,
        cert_fingerprint=info.cert_fingerprint,
        metrics_port=info.metrics_port,
        desk=desk_to_pb(info.desk),
        interfaces=[interface_to_pb(i) for i in info.interfaces],
        suspend_when_idle_seconds=info.suspend_when_idle_seconds,
        pool=info.pool,
        allocation_id=info.allocation_id,
    )


def node_info_from_pb(msg: pb.NodeInfo) -> NodeInfo:
    return NodeInfo(
        protocol_version=msg.protocol_version,
        node_id=msg.node_id,
        name=msg.name,
        hostname=msg.hostname,
        os=msg.os,
        python_version=msg.python_version,
        torch_version=msg.torch_version,
        sklearn_version=msg.sklearn_version,
        cpu_count=msg.cpu_count,
        memory_total_bytes=msg.memory_total_bytes,
        disk_free_bytes=msg.disk_free_bytes,
        gpus=tuple(GpuInfo(g.index, g.name, g.uuid, g.memory_total_bytes) for g in msg.gpus),
        workloads=tuple(msg.workloads),
        slots_total=msg.slots_total,
        slots_free=msg.slots_free,
        agent_version=msg.agent_version,
        labels=dict(msg.labels),
        draining=msg.draining,
        cluster_id=msg.cluster_id,
        cert_fingerprint=msg.cert_fingerprint,
        metrics_port=msg.metrics_port,
        desk=desk_from_pb(msg.desk) if msg.HasField("desk") else None,
        interfaces=tuple(interface_from_pb(i) for i in msg.interfaces),
        suspend_when_idle_seconds=msg.suspend_when_idle_seconds,
        pool=msg.pool,
        allocation_id=msg.allocation_id,
    )


def desk_to_pb(desk: DeskStatus | None) -> pb.DeskStatus | None:
    if desk is None:
        return None
    return pb.DeskStatus(
        owner_active=desk.owner_active,
        paused=desk.paused,
        reason=desk.reason,
        since=desk.since,
        idle_seconds=desk.idle_seconds,
        idle_threshold_seconds=desk.idle_threshold_seconds,
        schedule=desk.schedule,
    )


def desk_from_pb(msg: pb.DeskStatus) -> DeskStatus:
    return DeskStatus(
        owner_active=msg.owner_active,
        paused=msg.paused,
        reason=msg.reason,
        since=msg.since,
        idle_seconds=msg.idle_seconds,
        idle_threshold_seconds=msg.idle_threshold_seconds,
        schedule=msg.schedule,
    )


def interface_to_pb(i: NetInterface) -> pb.NetInterface:
    return pb.NetInterface(
        name=i.name,
        mac=i.mac,
        ipv4=i.ipv4,
        prefix_length=i.prefix_length,
        broadcast=i.broadcast,
        wake_on_lan=i.wake_on_lan,
        wake_on_lan_source=i.wake_on_lan_source,
    )


def interface_from_pb(msg: pb.NetInterface) -> NetInterface:
    return NetInterface(
        msg.name, msg.mac, msg.ipv4, msg.prefix_length, msg.broadcast, msg.wake_on_lan, msg.wake_on_lan_source
    )


def telemetry_to_pb(t: Telemetry) -> pb.Telemetry:
    return pb.Telemetry(
        time=t.time,
        cpu_percent=t.cpu_percent,
        memory_used_bytes=t.memory_used_bytes,
        memory_total_bytes=t.memory_total_bytes,
        disk_free_bytes=t.disk_free_bytes,
        gpus=[
            pb.GpuTelemetry(
                index=g.index,
                utilization_percent=g.utilization_percent,
                memory_used_bytes=g.memory_used_bytes,
                memory_total_bytes=g.memory_total_bytes,
                temperature_celsius=g.temperature_celsius,
                power_watts=g.power_watts,
                memory_reserved_bytes=g.memory_reserved_bytes,
                shared_tasks=g.shared_tasks,
                exclusive=g.exclusive,
            )
            for g in t.gpus
        ],
        slots_total=t.slots_total,
        slots_free=t.slots_free,
        tasks_running=t.tasks_running,
        draining=t.draining,
        disk_total_bytes=t.disk_total_bytes,
        desk=desk_to_pb(t.desk),
        going_to_sleep=t.going_to_sleep,
    )


def telemetry_from_pb(msg: pb.Telemetry) -> Telemetry:
    return Telemetry(
        time=msg.time,
        cpu_percent=msg.cpu_percent,
        memory_used_bytes=msg.memory_used_bytes,
        memory_total_bytes=msg.memory_total_bytes,
        disk_free_bytes=msg.disk_free_bytes,
        gpus=tuple(
            GpuTelemetry(
                g.index,
                g.utilization_percent,
                g.memory_used_bytes,
                g.memory_total_bytes,
                g.temperature_celsius,
                g.power_watts,
                g.memory_reserved_bytes,
                g.shared_tasks,
                g.exclusive,
            )
            for g in msg.gpus
        ),
        slots_total=msg.slots_total,
        slots_free=msg.slots_free,
        tasks_running=msg.tasks_running,
        draining=msg.draining,
        disk_total_bytes=msg.disk_total_bytes,
        desk=desk_from_pb(msg.desk) if msg.HasField("desk") else None,
        going_to_sleep=msg.going_to_sleep,
    )


# ---- task events


def environment_to_pb(p: EnvironmentReady) -> pb.EnvironmentReady:
    return pb.EnvironmentReady(
        key=p.key,
        cache_hit=p.cache_hit,
        build_seconds=p.build_seconds,
        source=p.source,
        python=p.python,
        files=p.files,
        bytes=p.bytes,
        materialize_seconds=p.materialize_seconds,
    )


def environment_from_pb(e: pb.EnvironmentReady) -> EnvironmentReady:
    return EnvironmentReady(
        e.key, e.cache_hit, e.build_seconds, e.source, e.python, e.files, e.bytes, e.materialize_seconds
    )


def peer_ticket_to_bytes(t: PeerTicket) -> bytes:
    """A PeerTicket as the controller signs it and peers check it (sorted content ids: one encoding per ticket)."""
    return pb.PeerTicket(
        reader_node_id=t.reader_node_id,
        controller_fingerprint=t.controller_fingerprint,
        content_ids=sorted(t.content_ids),
        expires_at=t.expires_at,
        job_id=t.job_id,
    ).SerializeToString()


def peer_ticket_from_bytes(data: bytes) -> PeerTicket:
    """The ticket in `data`; ValidationError when it is not a PeerTicket message."""
    try:
        msg = pb.PeerTicket.FromString(data)
    except DecodeError:
        raise ValidationError("ticket", "is not a PeerTicket message") from None
    return PeerTicket(
        msg.reader_node_id, msg.controller_fingerprint, frozenset(msg.content_ids), msg.expires_at, msg.job_id
    )


def list_cache_to_pb(
    blobs: int, blob_bytes: int, limit_bytes: int, trees: Sequence[Mapping[str, Any]]
) -> pb.ListCacheResponse:
    """ListCache's answer: the blob cache's size and limit, and each standing dataset tree (CacheTree's fields)."""
    return pb.ListCacheResponse(
        blobs=blobs,
        blob_bytes=blob_bytes,
        limit_bytes=limit_bytes,
        trees=[pb.CacheTree(**{k: t[k] for k in CACHE_TREE_KEYS}) for t in trees],
    )


def list_cache_from_pb(msg: pb.ListCacheResponse) -> dict[str, Any]:
    """{"blobs", "blob_bytes", "limit_bytes", "trees": [dicts with CACHE_TREE_KEYS, most recently used first]}."""
    return {
        "blobs": msg.blobs,
        "blob_bytes": msg.blob_bytes,
        "limit_bytes": msg.limit_bytes,
        "trees": [{k: getattr(t, k) for k in CACHE_TREE_KEYS} for t in msg.trees],
    }


CACHE_TREE_KEYS = ("name", "version", "content_id", "bytes", "files", "last_used", "in_use")


def dataset_transfer_to_pb(p: DatasetTransfer) -> pb.DatasetTransfer:
    return pb.DatasetTransfer(
        bytes_from_peers=p.bytes_from_peers,
        bytes_from_controller=p.bytes_from_controller,
        bytes_from_store=p.bytes_from_store,
        cached_bytes=p.cached_bytes,
        seconds=p.seconds,
        peers_used=p.peers_used,
        peer_failures=p.peer_failures,
    )


def dataset_transfer_from_pb(d: pb.DatasetTransfer) -> DatasetTransfer:
    return DatasetTransfer(
        d.bytes_from_peers,
        d.bytes_from_controller,
        d.bytes_from_store,
        d.cached_bytes,
        d.seconds,
        d.peers_used,
        d.peer_failures,
    )


def event_to_pb(event: TaskEvent) -> pb.TaskEvent:
    msg = pb.TaskEvent(task_id=event.task_id, seq=event.seq, time=event.time, trial=event.trial + 1)
    p = event.payload
    if isinstance(p, StateChanged):
        msg.state.CopyFrom(pb.StateChanged(state=state_to_pb(p.state), message=p.message))
    elif isinstance(p, LogLine):
        msg.log.CopyFrom(pb.LogLine(stream=LOG_STREAM.to_pb(p.stream, "log.stream"), line=p.line))
    elif isinstance(p, MetricPoint):
        msg.metric.CopyFrom(pb.MetricPoint(step=p.step, name=p.name, value=p.value, wall_time=p.wall_time))
    elif isinstance(p, Progress):
        msg.progress.CopyFrom(pb.Progress(fraction=p.fraction))
    elif isinstance(p, CheckpointSaved):
        msg.checkpoint.CopyFrom(pb.CheckpointSaved(sha256=p.sha256, size=p.size, step=p.step, name=p.name))
    elif isinstance(p, ArtifactReady):
        msg.artifact.CopyFrom(pb.ArtifactReady(sha256=p.sha256, size=p.size, kind=p.kind, name=p.name))
    elif isinstance(p, EnvironmentReady):
        msg.environment.CopyFrom(environment_to_pb(p))
    elif isinstance(p, DatasetTransfer):
        msg.dataset.CopyFrom(dataset_transfer_to_pb(p))
    elif isinstance(p, TrialEnded):
        msg.trial_ended.CopyFrom(pb.TrialEnded(ok=p.ok, error=p.error, duration_seconds=p.duration_seconds))
    elif isinstance(p, Finished):
        msg.finished.CopyFrom(
            pb.Finished(
                status=state_to_pb(p.status),
                exit_cause=EXIT_CAUSE.to_pb(p.exit_cause, "finished.exit_cause"),
                error=p.error,
                duration_seconds=p.duration_seconds,
            )
        )
    return msg


def event_from_pb(msg: pb.TaskEvent) -> TaskEvent:
    which = msg.WhichOneof("payload")
    payload: EventPayload
    if which == "state":
        payload = StateChanged(state_from_pb(msg.state.state), msg.state.message)
    elif which == "log":
        payload = LogLine(LOG_STREAM.from_pb(msg.log.stream, "log.stream"), msg.log.line)
    elif which == "metric":
        m = msg.metric
        payload = MetricPoint(m.step, m.name, m.value, m.wall_time)
    elif which == "progress":
        payload = Progress(msg.progress.fraction)
    elif which == "checkpoint":
        c = msg.checkpoint
        payload = CheckpointSaved(c.sha256, c.size, c.step, c.name)
    elif which == "artifact":
        a = msg.artifact
        payload = ArtifactReady(a.sha256, a.size, a.kind, a.name)
    elif which == "environment":
        payload = environment_from_pb(msg.environment)
    elif which == "dataset":
        payload = dataset_transfer_from_pb(msg.dataset)
    elif which == "trial_ended":
        t = msg.trial_ended
        payload = TrialEnded(t.ok, t.error, t.duration_seconds)
    elif which == "finished":
        f = msg.finished
        cause = EXIT_CAUSE.from_pb(f.exit_cause, "finished.exit_cause")
        payload = Finished(state_from_pb(f.status), cause, f.error, f.duration_seconds)
    else:
        raise ValueError(f"task event {msg.task_id}#{msg.seq} has no payload")
    return TaskEvent(msg.task_id, msg.seq, msg.time, payload, msg.trial - 1)


# A TaskEvent framed as one entry of TaskEventBatch.events (field 1, length-delimited): the journal's record.
# Records concatenate into a TaskEventBatch, so a journal file, and any run of its records, is one as it stands.
_EVENTS_FIELD = b"\x0a"


def event_record(event: TaskEvent) -> bytes:
    """The bytes the journal writes and WatchTask sends for one event (see _EVENTS_FIELD)."""
    return framed(_EVENTS_FIELD, event_to_pb(event).SerializeToString())


def framed(tag: bytes, body: bytes) -> bytes:
    """`body` as one length-delimited protobuf field: its tag byte, its length (a varint), the bytes."""
    size, prefix = len(body), bytearray(tag)
    while size > 0x7F:
        prefix.append(0x80 | (size & 0x7F))
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + body


def unframe(data: bytes, pos: int, tag: bytes) -> tuple[int, int] | None:
    """Where the body of a field `framed` with `tag` at `pos` starts and ends; None when another field is there or
    it is not whole (a torn tail)."""
    end = len(data)
    if data[pos : pos + 1] != tag:
        return None
    size, shift, cursor = 0, 0, pos + 1
    while cursor < end and shift < 64:
        byte = data[cursor]
        cursor += 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        return None
    if cursor + size > end:
        return None
    return cursor, cursor + size


def split_records(data: bytes, start: int = 0) -> tuple[list[bytes], int]:
    """Cut journal bytes from `start` into records; also where the whole records end (a torn tail is not one)."""
    records: list[bytes] = []
    pos = start
    while (body := unframe(data, pos, _EVENTS_FIELD)) is not None:
        records.append(data[pos : body[1]])
        pos = body[1]
    return records, pos


def events_from_batch(data: bytes) -> list[TaskEvent]:
    """The events of a serialized TaskEventBatch (a journal file or a run of its records); ValueError if it is
    not one."""
    try:
        return [event_from_pb(msg) for msg in pb.TaskEventBatch.FromString(data).events]
    except (DecodeError, ValidationError) as exc:
        raise ValueError(f"not a TaskEventBatch: {exc}") from None


def summary_to_pb(s: TaskSummary) -> pb.TaskSummary:
    return pb.TaskSummary(
        task_id=s.task_id,
        job_id=s.job_id,
        workload=s.workload,
        state=state_to_pb(s.state),
        created_at=s.created_at,
        finished_at=s.finished_at,
        last_seq=s.last_seq,
        exit_cause=EXIT_CAUSE.to_pb(s.exit_cause, "exit_cause"),
        slot_ids=list(s.slot_ids),
    )


def summary_from_pb(msg: pb.TaskSummary) -> TaskSummary:
    return TaskSummary(
        task_id=msg.task_id,
        job_id=msg.job_id,
        workload=msg.workload,
        state=state_from_pb(msg.state),
        created_at=msg.created_at,
        finished_at=msg.finished_at,
        last_seq=msg.last_seq,
        exit_cause=EXIT_CAUSE.from_pb(msg.exit_cause, "exit_cause"),
        slot_ids=tuple(msg.slot_ids),
    )


# ---- project envs (ListEnvs / PruneEnvs)


class EnvSummaryLike(Protocol):
    """What an env summary carries: runtime.envs.EnvInfo has these (convert imports no runtime module)."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def last_used(self) -> float: ...
    @property
    def jobs(self) -> int: ...
    @property
    def python(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def build_seconds(self) -> float: ...
    @property
    def in_use(self) -> int: ...


ENV_SUMMARY_KEYS = ("key", "size", "last_used", "jobs", "python", "source", "build_seconds", "in_use")


def env_summary_to_pb(info: EnvSummaryLike) -> pb.EnvSummary:
    return pb.EnvSummary(
        key=info.key,
        size_bytes=info.size,
        last_used=info.last_used,
        jobs=info.jobs,
        python=info.python,
        source=info.source,
        build_seconds=info.build_seconds,
        in_use=info.in_use,
    )


def env_summary_from_pb(msg: pb.EnvSummary) -> dict[str, Any]:
    """One cached env as a JSON-ready dict with ENV_SUMMARY_KEYS (what `tensorfleet agents envs --json` prints)."""
    return {
        "key": msg.key,
        "size": msg.size_bytes,
        "last_used": msg.last_used,
        "jobs": msg.jobs,
        "python": msg.python,
        "source": msg.source,
        "build_seconds": msg.build_seconds,
        "in_use": msg.in_use,
    }


def list_envs_to_pb(envs: Sequence[EnvSummaryLike], limit_bytes: int) -> pb.ListEnvsResponse:
    return pb.ListEnvsResponse(envs=[env_summary_to_pb(e) for e in envs], limit_bytes=limit_bytes)


def list_envs_from_pb(msg: pb.ListEnvsResponse) -> dict[str, Any]:
    """{"envs": [env dict, most recently used first], "limit_bytes": the agent's --env-cache-gb in bytes}."""
    return {"envs": [env_summary_from_pb(e) for e in msg.envs], "limit_bytes": msg.limit_bytes}


def prune_envs_from_pb(msg: pb.PruneEnvsResponse) -> dict[str, Any]:
    """{"removed": [keys], "freed_bytes": bytes freed}."""
    return {"removed": list(msg.removed), "freed_bytes": msg.freed_bytes}


@dataclass(frozen=True)
class TaskAccepted:
    """RunTask's answer: the agent's slots the task holds, and for a task sharing a GPU by memory the GPU the agent
    put it on and the bytes promised there (None: it shares no GPU)."""

    slot_ids: tuple[int, ...]
    shared_gpu: tuple[int, int] | None = None


def accepted_from_pb(msg: pb.RunTaskResponse) -> TaskAccepted:
    shared = (msg.shared_gpu_index, msg.shared_gpu_bytes) if msg.shared_gpu_bytes > 0 else None
    return TaskAccepted(tuple(msg.slot_ids), shared)
