"""Checks on requests before any work starts; every error names the field."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import TaskSpec
from tensorfleet_agent.core.types import copied_with as _replaced  # a validated spec's defaults, filled in

MAX_ID = 128
MAX_PARAMS_JSON = 1 << 20
MAX_INPUTS = 1000
MAX_ENV = 256
MAX_ENV_VALUE = 32 * 1024
MAX_WORLD = 4096
MAX_GPUS = 64
MAX_TIMEOUT = 30 * 86400.0
MAX_REASON = 4096
MAX_CHECKPOINT_GRACE = 3600.0
MAX_CV_FOLDS = 50

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = (
    "TENSORFLEET_",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONPATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
)


MAX_TRIALS_PER_TASK = 256  # bundled trials in one task (TaskSpec.trials); the controller's limit too
TRIAL_CATEGORIES = ("sklearn", "diagnostic")  # workloads short enough to bundle, one process for all


def check_id(value: str, field: str, *, required: bool = True) -> str:
    if not value:
        if required:
            raise ValidationError(field, "is required")
        return value
    if len(value) > MAX_ID:
        raise ValidationError(field, f"is {len(value)} characters long; at most {MAX_ID} allowed")
    if not _ID.match(value):
        raise ValidationError(field, f"may only hold letters, digits, '.', '_' and '-', got {value[:40]!r}")
    return value


def check_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise ValidationError(field, f"is {len(value)} characters long; at most {limit} allowed")
    return value


def parse_params_json(text: str, field: str = "spec.params_json") -> dict[str, Any]:
    if len(text) > MAX_PARAMS_JSON:
        raise ValidationError(field, f"is {len(text)} bytes; at most {MAX_PARAMS_JSON} allowed")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValidationError(field, f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def validate_task_spec(spec: TaskSpec) -> TaskSpec:
    """Check every field; return the spec with the workload's defaults filled in."""
    from tensorfleet_agent.workloads.datasets import check_dataset
    from tensorfleet_agent.workloads.registry import get_workload

    check_id(spec.task_id, "spec.task_id")
    check_id(spec.job_id, "spec.job_id", required=False)
    if not spec.workload:
        raise ValidationError("spec.workload", "is required")
    check_text(spec.workload, "spec.workload", MAX_ID)
    workload = get_workload(spec.workload, field="spec.workload")
    if not workload.installed():
        raise ValidationError(
            "spec.workload",
            f"{spec.workload!r} needs {', '.join(workload.requires)}, not installed on this agent",
        )
    params = workload.schema.validate(spec.params, prefix="spec.params")
    dataset_params = check_dataset(
        spec.workload, workload.tasks, spec.dataset, spec.dataset_params, "spec.dataset", workload.only_datasets
    )
    if workload.name == "script":
        _check_script(spec, params)
    world = spec.world_size or 1
    if not 1 <= world <= MAX_WORLD:
        raise ValidationError("spec.world_size", f"must be between 1 and {MAX_WORLD}, got {spec.world_size}")
    if not 0 <= spec.rank < world:
        raise ValidationError("spec.rank", f"must be in [0, world_size={world}), got {spec.rank}")
    if not 0 <= spec.gpus <= MAX_GPUS:
        raise ValidationError("spec.gpus", f"must be between 0 and {MAX_GPUS}, got {spec.gpus}")
    if not math.isfinite(spec.timeout_seconds) or not 0 <= spec.timeout_seconds <= MAX_TIMEOUT:
        raise ValidationError(
            "spec.timeout_seconds", f"must be between 0 and {MAX_TIMEOUT:g}, got {spec.timeout_seconds}"
        )
    if spec.gpu_memory_bytes < 0:
        raise ValidationError("spec.gpu_memory_bytes", f"must be >= 0, got {spec.gpu_memory_bytes}")
    if spec.gpu_memory_bytes and spec.gpus != 1:
        raise ValidationError("spec.gpus", f"a task sharing a GPU by memory takes 1, got {spec.gpus}")
    if spec.memory_limit_bytes < 0:
        raise ValidationError("spec.memory_limit_bytes", f"must be >= 0, got {spec.memory_limit_bytes}")
    if spec.attempt < 0:
        raise ValidationError("spec.attempt", f"must be >= 0, got {spec.attempt}")
    if spec.max_restarts < 0:
        raise ValidationError("spec.max_restarts", f"must be >= 0, got {spec.max_restarts}")
    _check_layout(spec, world)
    _check_inputs(spec)
    _check_dataset_mount(spec)
    _check_env(spec.env)
    if spec.partition not in ("", "cv", "gang", "shard"):
        raise ValidationError("spec.partition", f"must be '', 'cv', 'gang' or 'shard', got {spec.partition[:20]!r}")
    if spec.partition == "shard" and (spec.workload != "random_forest" or world < 2):
        raise ValidationError("spec.partition", "shards are for random_forest with world_size >= 2")
    if spec.partition == "cv" and (workload.category != "sklearn" or not 2 <= world <= MAX_CV_FOLDS):
        raise ValidationError(
            "spec.partition", f"cross-validation needs a scikit-learn workload and 2..{MAX_CV_FOLDS} folds"
        )
    if spec.partition == "gang" and workload.category == "torch" and spec.rendezvous is None:
        raise ValidationError("spec.rendezvous", "a multi-rank torch task needs the rendezvous of rank 0")
    if spec.rendezvous is not None:
        check_text(spec.rendezvous.master_addr, "spec.rendezvous.master_addr", 255)
        if not 0 <= spec.rendezvous.master_port <= 65535:
            raise ValidationError(
                "spec.rendezvous.master_port", f"must be a port number, got {spec.rendezvous.master_port}"
            )
    spec = _replaced(spec, params=params, world_size=world, dataset_params=dataset_params)
    return check_trials(spec) if spec.trials else spec


def check_trials(spec: TaskSpec) -> TaskSpec:
    """A bundle's trials (issue 21), checked as its params are: the spec with each trial's defaults filled in. Only
    short, single-process workloads are bundled: a torch or script task runs one trial per task."""
    from tensorfleet_agent.workloads.registry import get_workload

    workload = get_workload(spec.workload)
    if workload.category not in TRIAL_CATEGORIES or spec.partition:  # a sweep's trial is a whole job's run
        raise ValidationError(
            "spec.trials",
            f"trials are bundled only for a whole-job scikit-learn or diagnostic workload; {spec.workload!r} is "
            + (
                f"a {workload.category} workload"
                if workload.category not in TRIAL_CATEGORIES
                else f"a {spec.partition} partition's task"
            ),
        )
    if len(spec.trials) > MAX_TRIALS_PER_TASK:
        raise ValidationError("spec.trials", f"has {len(spec.trials)} trials; at most {MAX_TRIALS_PER_TASK} allowed")
    seen: set[int] = set()
    trials = []
    for k, trial in enumerate(spec.trials):
        if trial.index < 0 or trial.index in seen:
            problem = "is negative" if trial.index < 0 else "is used by another trial"
            raise ValidationError(f"spec.trials[{k}].index", f"{problem}: {trial.index}")
        seen.add(trial.index)
        params = workload.schema.validate(trial.params, prefix=f"spec.trials[{k}].params_json")
        trials.append(dataclasses.replace(trial, params=params))
    return dataclasses.replace(spec, trials=tuple(trials))


def _check_layout(spec: TaskSpec, world: int) -> None:
    """torchrun's numbers must describe a possible placement, or scripts would index devices that are not there."""
    if spec.local_world_size == 0 and spec.local_rank == spec.group_rank == spec.group_world_size == 0:
        return  # not set: alone on the agent
    if not 1 <= spec.local_world_size <= world:
        raise ValidationError(
            "spec.local_world_size", f"must be in [1, world_size={world}], got {spec.local_world_size}"
        )
    if not 0 <= spec.local_rank < spec.local_world_size:
        raise ValidationError(
            "spec.local_rank", f"must be in [0, local_world_size={spec.local_world_size}), got {spec.local_rank}"
        )
    if not 1 <= spec.group_world_size <= world:
        raise ValidationError(
            "spec.group_world_size", f"must be in [1, world_size={world}], got {spec.group_world_size}"
        )
    if not 0 <= spec.group_rank < spec.group_world_size:
        raise ValidationError(
            "spec.group_rank", f"must be in [0, group_world_size={spec.group_world_size}), got {spec.group_rank}"
        )


def _check_script(spec: TaskSpec, params: dict[str, Any]) -> None:
    from tensorfleet_agent.workloads.script import missing_requirements

    if not params["script"] or params["script"] not in {ref.name for ref in spec.inputs}:
        raise ValidationError("spec.params.script", "must name the script among the task's inputs")
    missing = missing_requirements(params["requirements"])
    if missing:
        raise ValidationError("spec.params.requirements", f"missing on this agent: {', '.join(missing)}")


def _check_inputs(spec: TaskSpec) -> None:
    from tensorfleet_agent.runtime.blobs import check_sha256

    if len(spec.inputs) > MAX_INPUTS:
        raise ValidationError("spec.inputs", f"has {len(spec.inputs)} entries; at most {MAX_INPUTS} allowed")
    seen: set[str] = set()
    for i, ref in enumerate(spec.inputs):
        where = f"spec.inputs[{i}]"
        if not ref.name or ref.name in (".", "..") or "/" in ref.name or "\\" in ref.name or "\0" in ref.name:
            raise ValidationError(f"{where}.name", f"must be a plain file name, got {ref.name[:40]!r}")
        check_text(ref.name, f"{where}.name", 255)
        if ref.name in seen:
            raise ValidationError(f"{where}.name", f"duplicate input name {ref.name!r}")
        seen.add(ref.name)
        check_sha256(ref.sha256, f"{where}.sha256")


def _check_dataset_mount(spec: TaskSpec) -> None:
    """A mount names its dataset and version and exactly one blob: an upload's manifest or a reference's listing."""
    from tensorfleet_agent.runtime.blobs import check_sha256

    mount = spec.dataset_mount
    if mount is None:
        return
    check_id(mount.name, "spec.dataset_mount.name")
    if mount.version < 1:
        raise ValidationError("spec.dataset_mount.version", f"must be >= 1, got {mount.version}")
    if bool(mount.manifest_id) == bool(mount.listing_id):
        raise ValidationError(
            "spec.dataset_mount", "must name exactly one of manifest_id (an upload) and listing_id (a reference)"
        )
    if mount.manifest_id:
        check_sha256(mount.manifest_id, "spec.dataset_mount.manifest_id")
    else:
        check_sha256(mount.listing_id, "spec.dataset_mount.listing_id")


def _check_env(env: dict[str, str]) -> None:
    if len(env) > MAX_ENV:
        raise ValidationError("spec.env", f"has {len(env)} entries; at most {MAX_ENV} allowed")
    for key, value in env.items():
        if not _ENV_KEY.match(key) or len(key) > 256:
            raise ValidationError(f"spec.env[{key[:40]!r}]", "is not a valid environment variable name")
        if key.startswith(_RESERVED_ENV):
            raise ValidationError(f"spec.env[{key!r}]", "is set by the agent and cannot be overridden")
        if len(value) > MAX_ENV_VALUE or "\0" in value:
            raise ValidationError(f"spec.env[{key!r}]", f"value must be at most {MAX_ENV_VALUE} characters, no NUL")
