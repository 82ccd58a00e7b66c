"""Protobuf <-> dataclass conversions round-trip every field."""

from __future__ import annotations

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import (
    ArtifactReady,
    BlobRef,
    CheckpointSaved,
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


def test_summary_round_trip() -> None:
    s = TaskSummary("t", "j", "sleep", TaskState.CANCELLED, 1.0, 2.0, 5, "cancelled", (0, 1))
    assert convert.summary_from_pb(convert.summary_to_pb(s)) == s
