"""torchrun's numbering of a gang: computed by the controller from the placement, turned into env by the worker."""

from __future__ import annotations

import dataclasses

import pytest

from tensorfleet_agent.core.codec import spec_to_dict
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import Rendezvous, TaskSpec
from tensorfleet_agent.core.validation import validate_task_spec
from tensorfleet_agent.rpc import convert
from tensorfleet_agent.workloads.torchrun import torchrun_env
from tensorfleet_desktop.controller.scheduler import RankLayout, rank_layout


def _columns(layout: dict[int, RankLayout]) -> tuple[list[int], ...]:
    ranks = sorted(layout)
    return tuple([getattr(layout[r], f.name) for r in ranks] for f in dataclasses.fields(RankLayout))


def test_interleaved_placement_numbers_ranks_per_agent_in_rank_order() -> None:
    local, local_world, group, groups = _columns(rank_layout({0: "A", 1: "B", 2: "A", 3: "B"}))
    assert local == [0, 0, 1, 1] and group == [0, 1, 0, 1]
    assert local_world == [2, 2, 2, 2] and groups == [2, 2, 2, 2]


def test_uneven_placement_groups_by_lowest_rank() -> None:
    # agent "z" holds rank 0, so it is group 0 whatever its name; "a" holds 1 and 4, "m" only 3
    layout = rank_layout({4: "a", 0: "z", 1: "a", 2: "z", 3: "m"})
    local, local_world, group, groups = _columns(layout)
    assert group == [0, 1, 0, 2, 1] and local == [0, 0, 1, 0, 1]
    assert local_world == [2, 2, 2, 1, 2] and set(groups) == {3}


def test_all_ranks_on_one_agent_and_one_rank_per_agent() -> None:
    assert _columns(rank_layout({0: "A", 1: "A", 2: "A"})) == ([0, 1, 2], [3, 3, 3], [0, 0, 0], [1, 1, 1])
    assert _columns(rank_layout({0: "A", 1: "B", 2: "C"})) == ([0, 0, 0], [1, 1, 1], [0, 1, 2], [3, 3, 3])


def _spec(**kw: object) -> TaskSpec:
    base: dict[str, object] = {"task_id": "t", "job_id": "job-7", "workload": "noop", "rank": 2, "world_size": 4}
    return TaskSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_env_has_every_variable_torchrun_sets() -> None:
    spec = _spec(
        local_rank=1,
        local_world_size=2,
        group_rank=0,
        group_world_size=2,
        attempt=3,
        max_restarts=5,
        rendezvous=Rendezvous("10.0.0.9", 29511),
    )
    env = torchrun_env(spec_to_dict(spec))
    assert env == {
        "RANK": "2",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "GROUP_WORLD_SIZE": "2",
        "ROLE_RANK": "2",
        "ROLE_WORLD_SIZE": "4",
        "ROLE_NAME": "default",
        "MASTER_ADDR": "10.0.0.9",
        "MASTER_PORT": "29511",
        "TORCHELASTIC_RUN_ID": "job-7",
        "TORCHELASTIC_RESTART_COUNT": "2",
        "TORCHELASTIC_MAX_RESTARTS": "5",
        "TORCHELASTIC_USE_AGENT_STORE": "False",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": env["TORCH_NCCL_ASYNC_ERROR_HANDLING"],
    }


def test_env_of_a_rank_without_layout_is_alone_on_its_agent() -> None:
    env = torchrun_env(spec_to_dict(_spec(world_size=1, rank=0)))
    layout = [env[k] for k in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE")]
    assert layout == ["0", "1", "0", "1"]
    assert env["MASTER_ADDR"] == "127.0.0.1" and 0 < int(env["MASTER_PORT"]) < 65536  # env:// works for one rank


def test_layout_survives_the_wire_and_the_journal() -> None:
    spec = _spec(local_rank=1, local_world_size=2, group_rank=1, group_world_size=2, max_restarts=3)
    assert convert.task_spec_from_pb(convert.task_spec_to_pb(spec)) == spec
    layout = ("local_rank", "local_world_size", "group_rank", "group_world_size", "max_restarts")
    assert [spec_to_dict(spec)[k] for k in layout] == [1, 2, 1, 2, 3]  # task.json, what the worker is handed


@pytest.mark.parametrize(
    ("layout", "field"),
    [
        ({"local_rank": 2, "local_world_size": 2, "group_world_size": 1}, "spec.local_rank"),
        ({"local_world_size": 5, "group_world_size": 1}, "spec.local_world_size"),
        ({"local_world_size": 1, "group_rank": 3, "group_world_size": 2}, "spec.group_rank"),
        ({"local_world_size": 1, "group_world_size": 0}, "spec.group_world_size"),
        ({"max_restarts": -1}, "spec.max_restarts"),
    ],
)
def test_impossible_layouts_are_refused(layout: dict[str, int], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_task_spec(_spec(**layout))
    assert err.value.field == field
