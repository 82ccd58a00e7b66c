"""task.inputs_dir() names a folder that exists, empty for a task without inputs, though the worker makes none
until it is asked for (code that lists its inputs must not fail with FileNotFoundError)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

from tensorfleet_agent import task as task_api
from tensorfleet_agent.runtime import worker


class _Channel:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def held(self, seconds: float) -> Any:  # pragma: no cover - no trials here
        import contextlib

        return contextlib.nullcontext()


def test_a_task_without_inputs_can_list_its_inputs_dir(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def entry(params: dict[str, Any]) -> None:
        seen["inputs"] = sorted(p.name for p in task_api.inputs_dir().iterdir())  # no inputs: an empty list

    module = types.ModuleType("tf_review_inputs_entry")
    module.entry = entry  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    channel = _Channel()
    cwd = os.getcwd()
    try:
        worker._run_one(
            {
                "spec": {"job_id": "j1", "params": {}},
                "task_dir": str(tmp_path / "work"),
                "blobs_dir": str(tmp_path / "blobs"),
                "entry": "tf_review_inputs_entry:entry",
            },
            channel,  # type: ignore[arg-type]
        )
    finally:
        os.chdir(cwd)
        sys.modules.pop(module.__name__, None)
    done = channel.sent[-1]
    assert done.get("ok") is True, done.get("error")
    assert seen["inputs"] == []
