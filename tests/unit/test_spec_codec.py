"""spec_to_dict, written out for speed, makes what dataclasses.asdict made: the same dict, the same key order (the
bytes of task.json), copies of the spec's dicts, and it knows every field of TaskSpec and its parts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tensorfleet_agent.core import codec
from tensorfleet_agent.core.codec import spec_to_dict
from tensorfleet_agent.core.types import (
    BlobRef,
    BundledTrial,
    DatasetMount,
    PeerSource,
    Rendezvous,
    TaskSpec,
    TrialFiles,
)


def reference(spec: TaskSpec) -> dict[str, Any]:
    """spec_to_dict as it was, by dataclasses.asdict."""
    body = dataclasses.asdict(spec)
    body["inputs"] = [dataclasses.asdict(ref) for ref in spec.inputs]
    if spec.dataset_mount is not None:
        for transport in ("peers", "ticket", "ticket_signature"):
            body["dataset_mount"].pop(transport, None)
    if not spec.gpu_memory_bytes:
        del body["gpu_memory_bytes"]
    if spec.trial_files is None:
        del body["trial_files"]
    if spec.trials:
        body["trials"] = [dataclasses.asdict(trial) for trial in spec.trials]
    else:
        del body["trials"]
    return body


SPECS = [
    TaskSpec("t", "", "noop"),
    TaskSpec("t1", "job-1", "noop", {}),
    TaskSpec(
        "t2",
        "j",
        "random_forest",
        {"n_estimators": 10, "nested": {"a": [1, 2.5, None, True, {"b": "c"}]}, "tuple": (1, [2])},
        rank=1,
        world_size=3,
        gpus=1,
        timeout_seconds=2.5,
        memory_limit_bytes=1 << 30,
        inputs=(BlobRef("a.csv", "0" * 64), BlobRef("b.csv", "1" * 64)),
        env={"FOO": "bar"},
        attempt=2,
        rendezvous=Rendezvous("10.0.0.1", 29500),
        dataset="iris",
        dataset_params={"rows": 10, "cols": [1, 2]},
        partition="shard",
        single_task=True,
        local_rank=1,
        local_world_size=2,
        group_rank=0,
        group_world_size=2,
        max_restarts=3,
        dataset_mount=DatasetMount(
            "ds", 4, "f" * 64, "", (PeerSource("n", "host:1", "fp", ("e" * 64,)),), b"ticket", b"signature"
        ),
        gpu_memory_bytes=1 << 32,
        trials=(BundledTrial(3, {"seed": 1, "grid": [1, 2]}), BundledTrial(4)),
        trial_files=TrialFiles("best", "accuracy", True, 2, 0.75),
    ),
    TaskSpec("t3", "j", "noop", dataset_mount=DatasetMount("ds", 1, listing_id="a" * 64), trial_files=TrialFiles()),
]


@pytest.mark.parametrize("spec", SPECS)
def test_the_same_dict_and_bytes_as_asdict(spec: TaskSpec) -> None:
    made, expected = spec_to_dict(spec), reference(spec)
    assert made == expected
    assert json.dumps(made) == json.dumps(expected)  # the key order too: task.json's bytes


def test_no_dict_of_the_spec_is_shared() -> None:
    spec = SPECS[2]
    body = spec_to_dict(spec)
    body["params"]["nested"]["a"].append("x")
    body["env"]["FOO"] = "changed"
    body["dataset_params"]["cols"].append(3)
    body["trials"][0]["params"]["grid"].append(3)
    assert spec_to_dict(spec) == reference(spec) and spec.env == {"FOO": "bar"}


def test_every_field_is_known() -> None:
    """A field added to TaskSpec or one of its parts must be added to spec_to_dict (and this test) too."""
    names = {cls: [f.name for f in dataclasses.fields(cls)] for cls in (BlobRef, Rendezvous, BundledTrial)}
    assert names == {
        BlobRef: ["name", "sha256"],
        Rendezvous: ["master_addr", "master_port"],
        BundledTrial: ["index", "params"],
    }
    assert [f.name for f in dataclasses.fields(DatasetMount)] == [
        "name",
        "version",
        "manifest_id",
        "listing_id",
        "peers",
        "ticket",
        "ticket_signature",
    ]
    nested = {"params", "inputs", "env", "rendezvous", "dataset_params", "dataset_mount", "trials", "trial_files"}
    assert nested == codec._NESTED
    hints = {f.name: f.type for f in dataclasses.fields(TaskSpec) if f.name not in nested}
    assert set(hints.values()) <= {"str", "int", "float", "bool"}  # plain values, kept as they are
