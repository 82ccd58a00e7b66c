"""A warm worker's next task starts with the environment the last one started with (worker._clean_slate): what a
task added, removed or changed is put back, and nothing else is touched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tensorfleet_agent.runtime import worker


def test_the_environment_a_task_changed_is_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_SLATE_KEPT", "1")
    monkeypatch.setenv("TF_SLATE_CHANGED", "before")
    monkeypatch.setenv("TF_SLATE_REMOVED", "here")
    monkeypatch.delenv("TF_SLATE_ADDED", raising=False)
    before = dict(os.environ)
    with worker._clean_slate():
        os.environ["TF_SLATE_ADDED"] = "new"
        os.environ["TF_SLATE_CHANGED"] = "after"
        del os.environ["TF_SLATE_REMOVED"]
    assert dict(os.environ) == before
    with worker._clean_slate():  # a task that changes nothing
        pass
    assert dict(os.environ) == before


def test_undecodable_values_and_the_process_environment_are_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """_clean_slate compares os.environ's encoded store: a value that is no UTF-8 (surrogate-escaped) comes back
    byte for byte, and putenv is told (what a task's child process would inherit)."""
    monkeypatch.setenv("TF_SLATE_RAW", "caf\udce9")
    monkeypatch.setenv("TF_SLATE_CHANGED", "before")
    monkeypatch.delenv("TF_SLATE_ADDED", raising=False)
    before = dict(os.environb)
    with worker._clean_slate():
        os.environ["TF_SLATE_RAW"] = "plain"
        os.environ["TF_SLATE_CHANGED"] = "after\udcff"
        os.environ["TF_SLATE_ADDED"] = "new"
    assert dict(os.environb) == before
    assert os.environb[b"TF_SLATE_RAW"] == b"caf\xe9"
    seen = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('TF_SLATE_CHANGED'), 'TF_SLATE_ADDED' in os.environ)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert seen == ["before", "False"]
