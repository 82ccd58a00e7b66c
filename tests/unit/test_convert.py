"""Protobuf <-> dataclass conversions round-trip every field; closed sets travel as enums."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    CheckpointSaved,
    ExitCause,
    Finished,
    GpuInfo,
    GpuTelemetry,
    LogLine,
    MetricPoint,
    NodeInfo,
    Progress,
    Rendezvous,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
    TaskSummary,
    Telemetry,
)
from tensorfleet_agent.rpc import convert
from tensorfleet_desktop import wire as cconvert
from tensorfleet_desktop.controller import datasets, fleet, registry
from tensorfleet_desktop.controller.fleet import AgentRecord, AgentState
from tensorfleet_desktop.controller.model import Job, JobEventRecord, JobState, JobTask, TaskRunState

PAYLOADS = [
    StateChanged(TaskState.RUNNING, "worker pid 1"),
    LogLine("stderr", "boom"),
    MetricPoint(7, "loss", 0.25, 1700000000.5),
    Progress(0.5),
    CheckpointSaved("a" * 64, 10, 3, "ckpt.pt"),
    ArtifactReady("b" * 64, 20, "model", "model.skops"),
    Finished(TaskState.FAILED, "timeout", "too slow", 1.5),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_event_round_trip(payload: object) -> None:
    event = TaskEvent("t1", 4, 1700000000.25, payload)  # type: ignore[arg-type]
    assert convert.event_from_pb(convert.event_to_pb(event)) == event


def test_task_spec_round_trip() -> None:
    spec = TaskSpec(
        task_id="job-1.t0.a0",
        job_id="job-1",
        workload="emit",
        params={"points": 3, "rate": 2.5, "name": "x"},
        rank=1,
        world_size=2,
        gpus=1,
        timeout_seconds=30,
        memory_limit_bytes=1 << 30,
        inputs=(BlobRef("data.csv", "c" * 64),),
        env={"FOO": "bar"},
        attempt=2,
        rendezvous=Rendezvous("10.0.0.1", 29500),
        gpu_memory_bytes=6 << 30,
    )
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)) == spec


def test_task_spec_without_rendezvous() -> None:
    spec = TaskSpec("t", "j", "noop")
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)).rendezvous is None


def test_unparsable_params_json_names_the_field() -> None:
    msg = convert.task_spec_to_pb(TaskSpec("t", "j", "noop"))
    msg.params_json = "{not json"
    with pytest.raises(ValidationError) as err:
        convert.task_spec_from_pb(msg)
    assert err.value.field == "spec.params_json"


def test_node_info_and_telemetry_round_trip() -> None:
    info = NodeInfo(
        1,
        "n" * 20,
        "box",
        "host",
        "Linux",
        "3.11",
        "",
        "1.5",
        8,
        1 << 34,
        1 << 30,
        (GpuInfo(0, "A100", "GPU-1", 1 << 35),),
        ("noop", "sleep"),
        4,
        3,
        "0.1.0",
        {"rack": "a"},
        False,
        "cluster",
        "fp",
    )
    assert convert.node_info_from_pb(convert.node_info_to_pb(info)) == info
    tel = Telemetry(1.0, 12.5, 100, 200, 300, (GpuTelemetry(0, 50.0, 1, 2, 60.0, 250.0),), 4, 3, 1)
    assert convert.telemetry_from_pb(convert.telemetry_to_pb(tel)) == tel
    shared = GpuTelemetry(1, 5.0, 3 << 30, 16 << 30, 40.0, 90.0, memory_reserved_bytes=12 << 30, shared_tasks=2)
    whole = GpuTelemetry(2, 99.0, 15 << 30, 16 << 30, 70.0, 300.0, exclusive=True)
    tel = Telemetry(1.0, 12.5, 100, 200, 300, (shared, whole), 4, 3, 1)
    assert convert.telemetry_from_pb(convert.telemetry_to_pb(tel)) == tel


def test_summary_round_trip() -> None:
    s = TaskSummary("t", "j", "sleep", TaskState.CANCELLED, 1.0, 2.0, 5, "cancelled", (0, 1))
    assert convert.summary_from_pb(convert.summary_to_pb(s)) == s


# ---- closed sets travel as proto enums; inside the code (and in the SDK's dicts) they stay plain strings

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto" / "tensorfleet" / "v1"
ENUM_FIELDS = {
    pb: ["TaskSpec.partition", "LogLine.stream", "Finished.exit_cause", "Finished.status", "TaskSummary.exit_cause",
         "TaskSummary.state", "StateChanged.state"],
    cpb: ["Job.state", "TaskInfo.state", "TaskInfo.exit_cause", "ListJobsRequest.states", "JobStateChanged.state",
          "JobTaskStateChanged.state", "LogRow.stream", "Agent.state",
          "Agent.source", "AgentEvent.kind", "DatasetInfo.format", "ModelVersion.format", "ModelVersion.blob_status",
          "DownloadModelRequest.format", "ModelDownloadHeader.format"],
}  # fmt: skip


@pytest.mark.parametrize("module,field", [(m, f) for m, fields in ENUM_FIELDS.items() for f in fields])
def test_closed_set_fields_are_enums(module: Any, field: str) -> None:
    message, name = field.split(".")
    descriptor = module.DESCRIPTOR.message_types_by_name[message].fields_by_name[name]
    assert descriptor.type == FieldDescriptor.TYPE_ENUM, f"{field} is documented as a closed set: make it an enum"


_ALTERNATIVE = re.compile(r'"?[A-Za-z_]*"?( \([^)]*\))?')


def closed_set_strings(text: str) -> list[str]:
    """`string` fields whose comment (trailing, or the lines just above) lists their values as `a | b | c`."""
    found, above = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            above.append(stripped[2:])
            continue
        field = re.match(r"(?:repeated |optional )?string (\w+) = \d+;\s*(?://(.*))?", stripped)
        if field:
            for comment in [*above, field.group(2) or ""]:
                for segment in comment.split(":"):
                    parts = [p.strip().rstrip(",.;") for p in segment.split("|")]
                    if len(parts) >= 2 and all(_ALTERNATIVE.fullmatch(p) for p in parts):
                        found.append(f"{field.group(1)}: {comment.strip()}")
        above = []
    return found


def test_no_string_field_is_documented_as_a_closed_set() -> None:
    offenders = {p.name: closed_set_strings(p.read_text()) for p in sorted(PROTO_DIR.glob("*.proto"))}
    assert not any(offenders.values()), offenders
    # the check sees the old style: a free string with its values in a comment
    assert closed_set_strings('  string stream = 1;                 // "stdout" | "stderr" | "agent"\n')
    assert closed_set_strings("  // completed | exception | timeout\n  string exit_cause = 2;\n")
    assert not closed_set_strings("  string kind = 3;  // model | report | what save_artifact() named\n")


ENUM_MAPS: dict[str, convert.EnumMap[Any]] = {
    "partition": convert.PARTITION,
    "log_stream": convert.LOG_STREAM,
    "exit_cause": convert.EXIT_CAUSE,
    "job_state": cconvert.JOB_STATE,
    "task_state": cconvert.TASK_STATE,
    "agent_state": cconvert.AGENT_STATE,
    "agent_source": cconvert.AGENT_SOURCE,
    "agent_event_kind": cconvert.AGENT_EVENT_KIND,
    "dataset_format": cconvert.DATASET_FORMAT,
    "model_format": cconvert.MODEL_FORMAT,
    "blob_status": cconvert.BLOB_STATUS,
}
#: the plain values the code uses, from the code itself, so a new value without an enum value fails here
CODE_VALUES: dict[str, set[str]] = {
    "partition": {"", "cv", "gang", "shard"},
    "log_stream": {"stdout", "stderr", "agent", "controller"},
    "exit_cause": {"", *(v for k, v in vars(ExitCause).items() if k.isupper())},
    "job_state": {s.value for s in JobState},
    "task_state": {s.value for s in TaskRunState},
    "agent_state": {*(s.value for s in AgentState), "REFUSED"},
    "agent_source": set(fleet._SOURCE_RANK),
    "agent_event_kind": {"added", "lost", "back", "telemetry", "updated", "removed", "paired"},
    "dataset_format": {suffix.lstrip(".") for suffix in datasets.FORMATS},
    "model_format": {f for formats in registry.FORMATS.values() for f in formats},
    "blob_status": {"", registry.MISSING, registry.DAMAGED},
}


@pytest.mark.parametrize("name", ENUM_MAPS)
def test_every_enum_value_maps_both_ways(name: str) -> None:
    enum = ENUM_MAPS[name]
    assert set(enum.values) == CODE_VALUES[name]
    numbers = {enum.to_pb(value, name) for value in enum.values}
    # every value of the proto enum has a plain value (UNSPECIFIED only where it means something, e.g. "not ended")
    assert numbers | {0} == set(enum.enum.values_by_number)
    for value in enum.values:
        assert enum.from_pb(enum.to_pb(value, name), name) == value


@pytest.mark.parametrize("name", ENUM_MAPS)
def test_unknown_or_unspecified_enum_input_is_refused_by_field(name: str) -> None:
    enum = ENUM_MAPS[name]
    refused = [99, -1] + ([] if 0 in {enum.to_pb(v, name) for v in enum.values} else [0])
    for number in refused:
        with pytest.raises(ValidationError) as err:
            enum.from_pb(number, f"req.{name}")
        assert err.value.field == f"req.{name}"
        assert enum.allowed() in err.value.message and enum.allowed()
    with pytest.raises(ValidationError, match=r"must be one of .*got 'bogus'"):
        enum.to_pb("bogus", name)


def test_task_spec_partition_unspecified_is_refused() -> None:
    for partition in ("", "cv", "gang", "shard"):
        spec = TaskSpec("t", "j", "noop", partition=partition)
        assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)) == spec
    msg = convert.task_spec_to_pb(TaskSpec("t", "j", "noop"))
    msg.partition = pb.TASK_PARTITION_UNSPECIFIED
    with pytest.raises(ValidationError, match="TASK_PARTITION_WHOLE") as err:
        convert.task_spec_from_pb(msg)
    assert err.value.field == "spec.partition"


@pytest.mark.parametrize("cause", sorted(CODE_VALUES["exit_cause"] - {"", "rejected", "pruned"}))
def test_agent_exit_causes_and_streams_round_trip(cause: str) -> None:
    finished = TaskEvent("t", 1, 1.0, Finished(TaskState.FAILED, cause, "e", 1.0))
    assert convert.event_from_pb(convert.event_to_pb(finished)) == finished
    s = TaskSummary("t", "j", "sleep", TaskState.FAILED, 1.0, 2.0, 5, cause, (0,))
    assert convert.summary_from_pb(convert.summary_to_pb(s)) == s
    for stream in ("stdout", "stderr", "agent"):
        line = TaskEvent("t", 2, 1.0, LogLine(stream, "x"))
        assert convert.event_from_pb(convert.event_to_pb(line)) == line


def test_job_states_and_task_fields_reach_the_sdk_as_strings() -> None:
    for state in JobState:
        tasks = [
            JobTask(i, state=s, exit_cause=c)
            for i, (s, c) in enumerate(zip(TaskRunState, itertools.cycle(["", "pruned"]), strict=False))
        ]
        job = Job("j1", {"name": "x", "algorithm": "noop"}, "me", 1, state=state, tasks=tasks)
        msg = cconvert.job_to_pb(job, {})
        assert msg.state == cpb.JobState.Value(f"JOB_STATE_{state.name}")
        body = cconvert.job_from_pb(msg)
        assert body["state"] == state.value
        assert [(t["state"], t["exit_cause"]) for t in body["task_list"]] == [
            (t.state.value, t.exit_cause) for t in tasks
        ]
    assert cconvert.job_states_from_pb(cconvert.job_states_to_pb(["RUNNING", "PAUSED"])) == ("RUNNING", "PAUSED")
    with pytest.raises(ValidationError, match="JOB_STATE_QUEUED") as err:
        cconvert.job_states_from_pb([cpb.JOB_STATE_RUNNING, cpb.JOB_STATE_UNSPECIFIED])
    assert err.value.field == "states"


RECORDS = [
    JobEventRecord("j1", 1, 1.0, "job_state", state="PAUSED", message="paused"),
    JobEventRecord("j1", 2, 1.5, "task_state", 0, state="DISPATCHED", message="placed"),
    JobEventRecord("j1", 3, 2.0, "log", 1, stream="stderr", message="boom"),
    JobEventRecord("j1", 4, 2.5, "log", -1, stream="controller", message="registered"),
    JobEventRecord("j1", 5, 3.0, "artifact", 0, state="my-report", name="r.txt", message="a" * 64, value=3.0),
    JobEventRecord("j1", 6, 3.5, "metric", 0, step=2, name="loss", value=0.5, wall_time=9.0, attempt_id="j1.t0.a1"),
    JobEventRecord("j1", 7, 4.0, "metric", 1, step=2, name="loss", value=0.25, wall_time=9.5),
    JobEventRecord("j1", 8, 4.5, "progress", 0, value=0.25),
    JobEventRecord("j1", 9, 5.0, "artifact", 0, state="checkpoint", name="c.pt", message="b" * 64, value=7.0, step=3),
    JobEventRecord("j1", 10, 5.5, "metric", 0, step=3, name="loss", value=0.125, wall_time=10.0),
]


def test_each_event_kind_has_its_own_message_and_consecutive_points_and_lines_travel_together() -> None:
    job = Job("j1", {"name": "x", "algorithm": "noop"}, "me", 1, state=JobState.PAUSED)
    events = [cconvert.job_event_from_pb(m) for m in cconvert.job_events_to_pb(RECORDS, job, {})]
    assert [(e["kind"], e["seq"]) for e in events] == [
        ("job_state", 1), ("task_state", 2), ("logs", 4), ("artifact", 5), ("metrics", 7), ("progress", 8),
        ("checkpoint", 9), ("metrics", 10),
    ]  # fmt: skip
    state, task, logs, artifact, metrics, progress, checkpoint, _ = events
    assert (state["state"], state["message"], state["job"]["state"]) == ("PAUSED", "paused", "PAUSED")
    assert (task["task_index"], task["state"], task["message"]) == (0, "DISPATCHED", "placed")
    assert logs["lines"] == [
        {"task_index": 1, "time": 2.0, "stream": "stderr", "line": "boom", "seq": 3},
        {"task_index": -1, "time": 2.5, "stream": "controller", "line": "registered", "seq": 4},
    ]
    assert {k: artifact[k] for k in ("task_index", "name", "artifact_kind", "sha256", "size")} == {
        "task_index": 0, "name": "r.txt", "artifact_kind": "my-report", "sha256": "a" * 64, "size": 3,
    }  # fmt: skip
    assert metrics["points"] == [
        {"task_index": 0, "step": 2, "name": "loss", "value": 0.5, "wall_time": 9.0, "agent_task_id": "j1.t0.a1",
         "seq": 6},
        {"task_index": 1, "step": 2, "name": "loss", "value": 0.25, "wall_time": 9.5, "agent_task_id": "", "seq": 7},
    ]  # fmt: skip
    assert metrics["time"] == 4.0  # a batch is as old as its last record
    assert (progress["task_index"], progress["fraction"]) == (0, 0.25)
    assert {k: checkpoint[k] for k in ("name", "sha256", "size", "step")} == {
        "name": "c.pt", "sha256": "b" * 64, "size": 7, "step": 3,
    }  # fmt: skip


def test_a_long_run_of_points_is_cut_into_batches_that_cover_every_seq_once() -> None:
    records = [JobEventRecord("j1", n, 1.0, "metric", 0, step=n, name="loss") for n in range(1, 2 * 1000 + 6)]
    events = cconvert.job_events_to_pb(records, None, {})
    assert [len(e.metrics.points) for e in events] == [cconvert.MAX_BATCH, cconvert.MAX_BATCH, 5]
    assert [p.seq for e in events for p in e.metrics.points] == [r.seq for r in records]
    assert [e.seq for e in events] == [1000, 2000, 2005]


def test_agents_models_and_datasets_keep_their_string_values() -> None:
    for source in CODE_VALUES["agent_source"]:
        record = AgentRecord("n" * 20, "127.0.0.1:1", source, state=AgentState.LOST)
        body = cconvert.agent_from_pb(cconvert.agent_to_pb(record))
        assert (body["state"], body["source"]) == ("LOST", source)
        event = cconvert.agent_event_from_pb(cconvert.agent_event_to_pb("paired", cconvert.agent_to_pb(record), 2.0))
        assert (event["kind"], event["agent"]["id"], event["time"]) == ("paired", "n" * 20, 2.0)
    model = {"name": "m", "version": 1, "algorithm": "noop", "sha256": "a" * 64}
    for fmt, blob in [("skops", ""), ("safetensors", registry.MISSING), ("skops", registry.DAMAGED)]:
        msg = cconvert.model_to_pb({**model, "format": fmt, "blob": blob})
        assert msg.blob_status != cpb.BLOB_STATUS_UNSPECIFIED
        assert {k: cconvert.model_from_pb(msg)[k] for k in ("format", "blob_status")} == {
            "format": fmt,
            "blob_status": blob,
        }
    unchecked = cconvert.model_to_pb({**model, "format": "skops"})  # replies that do not hash the file
    assert (
        unchecked.blob_status == cpb.BLOB_STATUS_UNSPECIFIED and cconvert.model_from_pb(unchecked)["blob_status"] == ""
    )
    for fmt in ("csv", "parquet"):
        entry = {"name": "d", "sha256": "b" * 64, "filename": "d.csv", "format": fmt, "rows": 1, "columns": ["a"],
                 "size": 3, "created_at": 1.0}  # fmt: skip
        assert cconvert.dataset_to_pb(entry).format == cpb.DatasetFormat.Value(f"DATASET_FORMAT_{fmt.upper()}")


def test_download_format_unset_is_the_stored_one_and_unspecified_is_refused() -> None:
    assert cconvert.download_format_from_pb(cconvert.download_format_to_pb("")) == ""
    assert not cconvert.download_format_to_pb("").HasField("format")
    for fmt in ("skops", "safetensors", "pickle", "joblib", "onnx"):
        assert cconvert.download_format_from_pb(cconvert.download_format_to_pb(fmt)) == fmt
    for number in (cpb.MODEL_FORMAT_UNSPECIFIED, 42):
        with pytest.raises(ValidationError) as err:
            cconvert.download_format_from_pb(cpb.DownloadModelRequest(ref="m", format=number))  # type: ignore[arg-type]
        assert err.value.field == "format" and "MODEL_FORMAT_PICKLE" in err.value.message
    with pytest.raises(ValidationError, match="'zip'"):
        cconvert.download_format_to_pb("zip")


def test_a_batch_s_job_state_events_carry_the_job_converted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    job = Job("j1", {"name": "x", "algorithm": "noop"}, "me", 1, state=JobState.RUNNING, tasks=[JobTask(0)])
    conversions: list[str] = []
    real = cconvert.job_to_pb

    def counted(j: Job, names: dict[str, str]) -> cpb.Job:
        conversions.append(j.id)
        return real(j, names)

    monkeypatch.setattr(cconvert, "job_to_pb", counted)
    records = [
        JobEventRecord("j1", 1, 1.0, "job_state", state="RUNNING", message="started"),
        JobEventRecord("j1", 2, 1.5, "log", 0, stream="stdout", message="hi"),
        JobEventRecord("j1", 3, 2.0, "job_state", state="RUNNING", message="progress"),
    ]
    events = [cconvert.job_event_from_pb(m) for m in cconvert.job_events_to_pb(records, job, {})]
    assert conversions == ["j1"]
    assert [(e["kind"], e["job"]["state"], e["job"]["tasks"]["total"]) for e in events if e["kind"] == "job_state"] == [
        ("job_state", "RUNNING", 1),
        ("job_state", "RUNNING", 1),
    ]
    cconvert.job_events_to_pb(records[1:2], job, {})  # no job_state event: no conversion
    assert conversions == ["j1"]
