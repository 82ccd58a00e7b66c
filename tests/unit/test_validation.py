"""Request validation: every problem is a ValidationError naming its field; nothing else escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import BlobRef, TaskSpec
from tensorfleet_agent.core.validation import validate_task_spec
from tensorfleet_agent.rpc.convert import task_spec_from_pb

OK = TaskSpec("t-1", "job-1", "sleep", {"seconds": 1})


def test_valid_spec_gets_defaults() -> None:
    spec = validate_task_spec(TaskSpec("t-1", "", "emit", {}, world_size=0))
    assert spec.params == {"points": 100, "rate": 0.0, "name": "value"}
    assert spec.world_size == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"task_id": ""}, "spec.task_id"),
        ({"task_id": "../etc"}, "spec.task_id"),
        ({"task_id": "x" * 200}, "spec.task_id"),
        ({"job_id": "bad id"}, "spec.job_id"),
        ({"workload": ""}, "spec.workload"),
        ({"workload": "bitcoin_miner"}, "spec.workload"),
        ({"params": {"seconds": -1}}, "spec.params.seconds"),
        ({"params": {"secs": 1}}, "spec.params.secs"),
        ({"rank": 2, "world_size": 2}, "spec.rank"),
        ({"rank": -1}, "spec.rank"),
        ({"world_size": -3}, "spec.world_size"),
        ({"gpus": -1}, "spec.gpus"),
        ({"timeout_seconds": -5.0}, "spec.timeout_seconds"),
        ({"timeout_seconds": float("nan")}, "spec.timeout_seconds"),
        ({"memory_limit_bytes": -1}, "spec.memory_limit_bytes"),
        ({"gpu_memory_bytes": -1}, "spec.gpu_memory_bytes"),
        ({"gpu_memory_bytes": 1 << 30, "gpus": 2}, "spec.gpus"),
        ({"gpu_memory_bytes": 1 << 30, "gpus": 0}, "spec.gpus"),
        ({"attempt": -1}, "spec.attempt"),
        ({"inputs": (BlobRef("../x", "a" * 64),)}, "spec.inputs[0].name"),
        ({"inputs": (BlobRef("x", "nothex"),)}, "spec.inputs[0].sha256"),
        ({"inputs": (BlobRef("x", "a" * 64), BlobRef("x", "b" * 64))}, "spec.inputs[1].name"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "0"}}, "spec.env['CUDA_VISIBLE_DEVICES']"),
        ({"env": {"1BAD": "x"}}, "spec.env['1BAD']"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, object], field: str) -> None:
    import dataclasses

    with pytest.raises(ValidationError) as err:
        validate_task_spec(dataclasses.replace(OK, **changes))  # type: ignore[arg-type]
    assert err.value.field == field
    assert field in str(err.value)


def test_oversized_params_json() -> None:
    msg = pb.TaskSpec(task_id="t", workload="noop", params_json=json.dumps({"x": "y" * (2 << 20)}))
    with pytest.raises(ValidationError, match=r"spec\.params_json"):
        task_spec_from_pb(msg)


def test_params_json_must_be_object() -> None:
    with pytest.raises(ValidationError, match="JSON object"):
        task_spec_from_pb(pb.TaskSpec(task_id="t", workload="noop", params_json="[1, 2]"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
params_json = st.one_of(
    st.text(max_size=50),
    st.dictionaries(st.sampled_from(["seconds", "points", "rate", "mode", "code", "x"]), json_values, max_size=4).map(
        json.dumps
    ),
)
task_specs = st.builds(
    pb.TaskSpec,
    task_id=st.text(max_size=140),
    job_id=st.text(max_size=20),
    workload=st.sampled_from(["noop", "sleep", "emit", "fail", "allocate", "", "nope"]) | st.text(max_size=10),
    params_json=params_json,
    rank=st.integers(-(2**31), 2**31 - 1),
    world_size=st.integers(-(2**31), 2**31 - 1),
    gpus=st.integers(-(2**31), 2**31 - 1),
    timeout_seconds=st.floats(allow_nan=True, allow_infinity=True),
    memory_limit_bytes=st.integers(-(2**63), 2**63 - 1),
    inputs=st.lists(st.builds(pb.BlobRef, name=st.text(max_size=12), sha256=st.text(max_size=70)), max_size=3),
    env=st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3),
    attempt=st.integers(-(2**31), 2**31 - 1),
    partition=st.sampled_from(pb.TaskPartition.values()),
)


@settings(max_examples=400, deadline=None)
@given(task_specs)
def test_any_task_spec_is_accepted_or_refused_by_field(msg: pb.TaskSpec) -> None:
    try:
        spec = validate_task_spec(task_spec_from_pb(msg))
    except ValidationError as err:
        assert err.field.startswith("spec.") and err.message
        return
    assert spec.task_id == msg.task_id and 0 <= spec.rank < spec.world_size
