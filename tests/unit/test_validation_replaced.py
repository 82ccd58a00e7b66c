"""validate_task_spec fills in a spec's defaults with validation._replaced, dataclasses.replace without TaskSpec's
__init__: the spec it makes is the one dataclasses.replace would, as long as TaskSpec has nothing __init__ would do
beyond setting its fields."""

from __future__ import annotations

import dataclasses

import pytest

from tensorfleet_agent.core.types import TaskSpec
from tensorfleet_agent.core.validation import _replaced, validate_task_spec


def test_taskspec_has_nothing_init_would_do_beyond_its_fields() -> None:
    assert not hasattr(TaskSpec, "__post_init__")
    assert not hasattr(TaskSpec, "__slots__")
    assert all(f.init and f._field_type is dataclasses._FIELD for f in dataclasses.fields(TaskSpec))  # type: ignore[attr-defined]


def test_the_same_spec_as_dataclasses_replace() -> None:
    spec = TaskSpec("t", "j", "noop", {"a": 1}, world_size=0, env={"X": "1"})
    made = _replaced(spec, params={"b": 2}, world_size=1, dataset_params={"c": 3})
    expected = dataclasses.replace(spec, params={"b": 2}, world_size=1, dataset_params={"c": 3})
    assert type(made) is TaskSpec and made == expected and repr(made) == repr(expected)
    assert made.params is not spec.params and spec.params == {"a": 1} and spec.world_size == 0  # the spec untouched
    assert made.env is spec.env  # as dataclasses.replace: the fields not changed are the same objects
    assert vars(made) == vars(expected) and list(vars(made)) == list(vars(expected))


def test_a_validated_spec_is_a_whole_frozen_taskspec() -> None:
    spec = validate_task_spec(TaskSpec("t", "j", "noop", {}, world_size=0))
    assert spec == dataclasses.replace(TaskSpec("t", "j", "noop", {}, world_size=0), world_size=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.world_size = 2  # type: ignore[misc]
