"""keep_models in the job spec: best (the default), all or none, for sweeps; anything else is refused by name."""

from __future__ import annotations

import pytest

from tensorfleet_desktop.cli import build_parser
from tensorfleet_desktop.cli.jobs import spec_from_args
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec

SWEEP = {"algorithm": "decision_tree", "dataset": "iris", "sweep": {"params": {"max_depth": "int:1:4"}}}


def test_keep_models_defaults_to_best_and_is_stored_with_a_sweep() -> None:
    assert parse_job_spec(SWEEP).to_dict()["keep_models"] == "best"
    for keep in ("best", "all", "none"):
        assert parse_job_spec({**SWEEP, "keep_models": keep}).keep_models == keep
    assert "keep_models" not in parse_job_spec({"algorithm": "decision_tree", "dataset": "iris"}).to_dict()


@pytest.mark.parametrize("value", ["some", "BEST", 1, True, ["all"]])
def test_a_bad_keep_models_is_refused_by_name(value: object) -> None:
    with pytest.raises(JobSpecError) as caught:
        parse_job_spec({**SWEEP, "keep_models": value})
    assert caught.value.field == "keep_models" and "best, all, none" in caught.value.message


def test_keep_models_all_or_none_needs_a_sweep() -> None:
    with pytest.raises(JobSpecError, match="sweeps") as caught:
        parse_job_spec({"algorithm": "decision_tree", "dataset": "iris", "keep_models": "all"})
    assert caught.value.field == "keep_models"


def test_the_cli_flag_reaches_the_spec() -> None:
    args = build_parser().parse_args(
        ["submit", "-a", "decision_tree", "-d", "iris", "--sweep", "max_depth=int:1:4", "--keep-models", "none"]
    )
    assert spec_from_args(args)["keep_models"] == "none"
