"""The task spec as a JSON-ready dict: what task.json on disk keeps and what the worker is handed.

(Task events are not here: the journal keeps them as the protobuf bytes WatchTask streams, see rpc/convert.py.)
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from tensorfleet_agent.core.types import TaskSpec

# Fields spec_to_dict converts itself; every other field is a plain value (str, int, float, bool) or a dict of JSON
# values. A test checks this split against TaskSpec's fields, so a new field cannot be missed here.
_NESTED = frozenset(
    {"params", "inputs", "env", "rendezvous", "dataset_params", "dataset_mount", "trials", "trial_files"}
)
_FIELDS = tuple(f.name for f in dataclasses.fields(TaskSpec))


def spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """A dataset mount's peers and ticket are left out: they say how to fetch the version this time, not which task
    this is (a RunTask sent again with a fresh ticket is the same task), and the ticket is a credential the task's
    code has no use for.

    Written out rather than dataclasses.asdict (a fifth of the time, once per task), with the same dict: the same
    keys in the same order (task.json's bytes) and copies of the spec's dicts, never the spec's own."""
    body: dict[str, Any] = {}
    for name in _FIELDS:
        if name not in _NESTED:
            body[name] = getattr(spec, name)
            continue
        value = getattr(spec, name)
        if name == "inputs":
            body[name] = [{"name": ref.name, "sha256": ref.sha256} for ref in value]
        elif name == "rendezvous":
            body[name] = None if value is None else {"master_addr": value.master_addr, "master_port": value.master_port}
        elif name == "dataset_mount":
            body[name] = (
                None
                if value is None
                else {
                    "name": value.name,
                    "version": value.version,
                    "manifest_id": value.manifest_id,
                    "listing_id": value.listing_id,
                }
            )
        elif name == "trials":
            if value:  # a list, as task.json reads back (RunTask's idempotency compares the two)
                body[name] = [{"index": trial.index, "params": copy_json(trial.params)} for trial in value]
            # else: the journals of tasks that bundle no trial read as before
        elif name == "trial_files":
            if value is not None:  # else: the journals of tasks of no sweep read as before
                body[name] = dataclasses.asdict(value)
        else:  # params, env, dataset_params
            body[name] = copy_json(value)
    if not spec.gpu_memory_bytes:  # the journals of tasks that share no GPU read as before
        del body["gpu_memory_bytes"]
    return body


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars; anything else by copy.deepcopy): what
    dataclasses.asdict and copy.deepcopy make of it, at a fraction of their generic machinery's cost (a task's spec
    once per task here, a job's on every store write in the controller)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    if isinstance(value, str | int | float):
        return value
    return copy.deepcopy(value)
