"""The task spec as a JSON-ready dict: what task.json on disk keeps and what the worker is handed.

(Task events are not here: the journal keeps them as the protobuf bytes WatchTask streams, see rpc/convert.py.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tensorfleet_agent.core.types import TaskSpec


def spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """A dataset mount's peers and ticket are left out: they say how to fetch the version this time, not which task
    this is (a RunTask sent again with a fresh ticket is the same task), and the ticket is a credential the task's
    code has no use for."""
    body = dataclasses.asdict(spec)
    body["inputs"] = [dataclasses.asdict(ref) for ref in spec.inputs]
    if spec.dataset_mount is not None:
        for transport in ("peers", "ticket", "ticket_signature"):
            body["dataset_mount"].pop(transport, None)
    if not spec.gpu_memory_bytes:  # the journals of tasks that share no GPU read as before
        del body["gpu_memory_bytes"]
    if spec.trial_files is None:  # the journals of tasks of no sweep read as before
        del body["trial_files"]
    if spec.trials:  # a list, as task.json reads back (RunTask's idempotency compares the two)
        body["trials"] = [dataclasses.asdict(trial) for trial in spec.trials]
    else:  # the journals of tasks that bundle no trial read as before
        del body["trials"]
    return body
