"""The task spec as a JSON-ready dict: what task.json on disk keeps and what the worker is handed.

(Task events are not here: the journal keeps them as the protobuf bytes WatchTask streams, see rpc/convert.py.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tensorfleet_agent.core.types import TaskSpec


def spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    body = dataclasses.asdict(spec)
    body["inputs"] = [dataclasses.asdict(ref) for ref in spec.inputs]
    return body
