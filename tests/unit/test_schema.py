from __future__ import annotations

import pytest

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.workloads.registry import all_workloads, available_workloads, get_workload


def test_defaults_filled() -> None:
    assert get_workload("emit").schema.validate({}) == {"points": 100, "rate": 0.0, "name": "value"}


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"points": -1}, "params.points", ">= 0"),
        ({"points": "many"}, "params.points", "integer"),
        ({"points": True}, "params.points", "integer"),
        ({"rate": float("inf")}, "params.rate", "finite"),
        ({"bogus": 1}, "params.bogus", "unknown parameter"),
        ({"name": 3}, "params.name", "string"),
    ],
)
def test_bad_values_name_the_field(params: dict[str, object], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as err:
        get_workload("emit").schema.validate(params)
    assert err.value.field == field and text in err.value.message


def test_choices() -> None:
    with pytest.raises(ValidationError, match="one of exception, exit, segfault"):
        get_workload("fail").schema.validate({"mode": "explode"})


def test_integral_float_accepted_as_int() -> None:
    assert get_workload("emit").schema.validate({"points": 5.0})["points"] == 5


def test_unknown_workload_lists_known() -> None:
    with pytest.raises(ValidationError) as err:
        get_workload("nope")
    assert err.value.field == "workload" and "unknown workload 'nope'" in err.value.message
    assert all(name in err.value.message for name in ("emit", "noop", "random_forest", "svm", "script"))


def test_diagnostics_need_nothing_extra() -> None:
    names = {w.name for w in available_workloads()}
    assert {"noop", "sleep", "emit", "fail"} <= names
    for w in all_workloads():
        assert w.to_dict()["name"] == w.name


PROJECT = {"manifest": "a" * 64, "command": ["python", "train.py"]}


@pytest.mark.parametrize("env", ["auto", "none", "requirements.txt", "envs/gpu.txt", "sub/uv.lock", "a..b.txt"])
def test_a_project_env_is_auto_none_or_a_file_inside_the_project(env: str) -> None:
    assert get_workload("project").schema.validate({**PROJECT, "env": env})["env"] == env


@pytest.mark.parametrize(
    "env", ["/etc/passwd", "../requirements.txt", "a/../../r.txt", "..", "sub\\r.txt", "r\x00.txt", "r\n.txt", ""]
)
def test_a_project_env_leaving_the_project_is_refused(env: str) -> None:
    with pytest.raises(ValidationError) as err:
        get_workload("project").schema.validate({**PROJECT, "env": env})
    assert err.value.field == "params.env" and "relative to the project" in err.value.message
