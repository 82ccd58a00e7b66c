"""`tensorfleet quota`'s arguments and its table, without a controller (the real-process test is in
tests/integration/test_team_quotas.py)."""

from __future__ import annotations

import argparse

import pytest

from tensorfleet_desktop.cli import build_parser
from tensorfleet_desktop.cli.quota import limit_arg, rows


def test_limits_parse_and_none_removes_one() -> None:
    assert limit_arg("gpus=4") == ("gpus", 4) and limit_arg("Tasks=none") == ("tasks", -1)
    for bad in ("gpus", "gpu=4", "tasks=-3", "queued=1.5", "tasks=many"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"gpus=N|whole number"):
            limit_arg(bad)
    for unicode_digit in ("tasks=²", "queued=٣", "gpus=\uff11"):  # digits to str.isdigit, not to int(): our message
        with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number >= 0, or none"):
            limit_arg(unicode_digit)
    with pytest.raises(argparse.ArgumentTypeError, match=r"whole GPUs: a task sharing a GPU counts its fraction"):
        limit_arg("gpus=0.5")
    args = build_parser().parse_args(["quota", "set", "alice", "gpus=4", "tasks=8"])
    assert (args.user, args.limits) == ("alice", [("gpus", 4), ("tasks", 8)])


def test_rows_join_limits_and_usage_per_user() -> None:
    report = {
        "quotas": [{"user": "alice", "gpus": 4, "tasks": -1, "queued": 50}],
        "usage": [
            {"user": "bob", "running_tasks": 2, "running_gpus": 0.5, "queued_jobs": 1, "usage": 30.0, "share": 1.0}
        ],
        "half_life_seconds": 3600.0,
    }
    assert rows(report) == [
        {
            "user": "alice",
            "gpus": 4,
            "tasks": -1,
            "queued": 50,
            "running_tasks": 0,
            "running_gpus": 0.0,
            "queued_jobs": 0,
            "usage": 0.0,
            "share": 0.0,
        },
        {
            "user": "bob",
            "gpus": -1,
            "tasks": -1,
            "queued": -1,
            "running_tasks": 2,
            "running_gpus": 0.5,
            "queued_jobs": 1,
            "usage": 30.0,
            "share": 1.0,
        },
    ]
