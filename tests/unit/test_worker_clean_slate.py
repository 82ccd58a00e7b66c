"""A warm worker's next task starts with the environment the last one started with (worker._clean_slate): what a
task added, removed or changed is put back, and nothing else is touched."""

from __future__ import annotations

import os

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
