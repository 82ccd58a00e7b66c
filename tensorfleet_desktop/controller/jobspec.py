"""The one place that parses job specs: from CLI flags, a YAML/JSON job file, the SDK or the GUI.

The controller re-validates every spec it receives with `parse_job_spec`, so a
client can never submit something the scheduler does not understand.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.codec import copy_json
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import MAX_FILES
from tensorfleet_agent.core.project_layout import DEFAULT_OUTPUT_DIR
from tensorfleet_agent.core.project_layout import WORKLOAD as PROJECT
from tensorfleet_agent.core.project_spec import check_command, check_env_choice
from tensorfleet_agent.core.sizes import parse_size
from tensorfleet_agent.workloads.datasets import CLASSIFICATION, REGRESSION, check_dataset, dataset_task
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller.dataset_versions import SOURCES
from tensorfleet_desktop.controller.sweep import budget, parse_sweep

FIELDS = (
    "name", "algorithm", "dataset", "dataset_params", "hyperparameters", "num_workers", "epochs", "gpus", "priority",
    "max_retries", "timeout", "constraints", "sweep", "model_name", "cv", "script", "target", "project", "command",
    "group", "tags", "keep_models", "dataset_version", "pool", "preemptible", "allow_restart", "gpu_memory",
    "gpu_fraction",
)  # fmt: skip
#: The label every agent started by a pool's allocation carries (pool=NAME); `pool: NAME` in a spec constrains on it.
POOL_LABEL = "pool"
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
KEEP_MODELS = ("best", "all", "none")  # which of a sweep's trials' models are copied to the blob store, registered
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_WORKERS = 256
MAX_SPEC_JSON = 1 << 20  # a job spec as JSON, over gRPC or HTTP
MAX_FILE_BYTES = 1 << 20
MAX_SCRIPT_BYTES = 512 * 1024
_SCRIPT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,120}\.py$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_PROJECT_BYTES = 64 << 30  # what a snapshot may hold, whatever limit its client chose
MAX_GIT_DIFF = 512 * 1024  # characters of a recorded dirty diff (the client cuts its own at 256 KiB)
MAX_GROUP = 100
MAX_TAG = 50
MAX_TAGS = 20
_GIT_KEYS = ("commit", "branch", "dirty", "diff", "diff_truncated", "untracked", "subdir", "remote")


class JobSpecError(ValidationError):
    """A job spec problem; `field` names the offending key (dotted for nested ones)."""


@dataclass(frozen=True)
class Constraints:
    on: tuple[str, ...] = ()  # agent ids or names the job may run on
    not_on: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.on or self.not_on or self.labels)


@dataclass(frozen=True)
class JobSpec:
    name: str
    algorithm: str
    dataset: str = ""
    dataset_params: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 1
    epochs: int | None = None
    gpus: int = 0
    priority: int = 0
    max_retries: int = 2
    timeout: float | None = None
    constraints: Constraints = field(default_factory=Constraints)
    model_name: str = ""
    cv: int | None = None  # k-fold cross-validation: one task per fold
    sweep: dict[str, Any] | None = None  # normalised sweep (see controller/sweep.py), with its trial budget
    script: dict[str, Any] | None = None  # name, source, sha256, args, requirements
    project: dict[str, Any] | None = None  # manifest_id, files, bytes, env, git (a project job, issue 19)
    command: list[str] | None = None  # a project job's command line, run in its materialized folder
    group: str = ""  # a label the experiments table groups by (e.g. "baseline", "lr-study")
    tags: tuple[str, ...] = ()
    keep_models: str = "best"  # a sweep's: best | all | none (controller/artifacts.py, "Sweeps" in the README)
    # the exact dataset version `dataset: NAME[:VERSION]` named (dataset_catalog.resolve): name, version,
    # content_id, source; the task reads it at TENSORFLEET_DATASET_DIR
    dataset_version: dict[str, Any] | None = None
    pool: str = ""  # run only on agents of this pool (issue 25), which brings them when none is online
    # May the scheduler stop its tasks for a job of higher priority (they checkpoint and are queued again)? Default:
    # priority below 0. A task that has no checkpoint yet is stopped only with allow_restart (it starts over).
    preemptible: bool = False
    allow_restart: bool = False
    # Sharing one GPU (gpus is then 1): the bytes of GPU memory each task may use, or the share of a GPU's memory
    # (`gpus: 0.5`); 0: whole GPUs.
    gpu_memory: int = 0
    gpu_fraction: float = 0.0

    @property
    def shares_gpu(self) -> bool:
        return bool(self.gpu_memory or self.gpu_fraction)

    def to_dict(self) -> dict[str, Any]:
        # asdict's deep copy, by JSON shape: asdict's generic recursion was ~3 % of the controller's CPU per noop job
        body = {name: None if name in _MADE_BELOW else copy_json(getattr(self, name)) for name in _FIELDS}
        body["constraints"] = {
            "on": list(self.constraints.on),
            "not_on": list(self.constraints.not_on),
            "labels": dict(self.constraints.labels),
        }
        if self.project is None:  # other jobs' stored specs stay as they were
            del body["project"], body["command"]
        body["tags"] = list(self.tags)
        for key in ("group", "tags"):  # likewise for jobs without labels
            if not body[key]:
                del body[key]
        if self.sweep is None:  # only a sweep has trials' models to keep
            del body["keep_models"]
        if self.dataset_version is None:  # jobs without a dataset version keep their stored specs as they were
            del body["dataset_version"]
        if not self.pool:
            del body["pool"]
        for key in ("allow_restart", "gpu_memory", "gpu_fraction"):  # other jobs' stored specs stay as they were
            if not body[key]:
                del body[key]
        if self.preemptible == (self.priority < 0):  # the default: said only when it differs
            del body["preemptible"]
        return body


def load_job_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON job file; problems are JobSpecError('file', ...)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise JobSpecError("file", f"{path} is larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobSpecError("file", f"cannot read job file {path}: {exc}") from None
    import yaml  # here, not at the top: ~20 ms of every controller start, for the CLI's job files only

    try:
        body = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise JobSpecError(
            "file", f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise JobSpecError("file", f"{path} must hold a mapping of job spec fields, got {type(body).__name__}")
    return body


_FIELDS = tuple(f.name for f in fields(JobSpec))
_MADE_BELOW = frozenset({"constraints", "tags"})  # to_dict makes them as lists and dicts, in their places


def parse_job_spec(body: Any) -> JobSpec:
    if not isinstance(body, dict):
        raise JobSpecError("spec", "must be an object of job spec fields")
    for key in body:
        if key not in FIELDS:
            raise JobSpecError(str(key), f"unknown field (allowed: {', '.join(FIELDS)})")
    if body.get("script") is not None and not body.get("algorithm"):
        body = {**body, "algorithm": "script"}
    if body.get("project") is not None and not body.get("algorithm"):
        body = {**body, "algorithm": PROJECT}
    algorithm = _str(body, "algorithm", required=True)
    workload = get_workload(algorithm, field="algorithm")
    dataset = _str(body, "dataset")
    if body.get("target") is not None:
        raise JobSpecError("target", f"is for uploaded datasets; {dataset or 'no dataset'} is not one")
    raw_params = body.get("dataset_params") or {}
    if not isinstance(raw_params, dict):
        raise JobSpecError("dataset_params", "must be a mapping of dataset parameter names to values")
    # A project reads whatever data it is given (dataset_dir()), or none.
    tasks = (CLASSIFICATION, REGRESSION) if algorithm == PROJECT and dataset else workload.tasks
    try:
        dataset_params = check_dataset(algorithm, tasks, dataset, raw_params, only=workload.only_datasets)
    except ValidationError as exc:
        raise JobSpecError(exc.field, exc.message) from None
    hyper = body.get("hyperparameters") or {}
    if not isinstance(hyper, dict):
        raise JobSpecError("hyperparameters", "must be a mapping of parameter names to values")
    epochs = _int(body, "epochs", None, minimum=1, maximum=1_000_000, nullable=True)
    if epochs is not None:
        if "epochs" not in workload.schema.names():
            raise JobSpecError("epochs", f"{algorithm} does not train in epochs")
        hyper = {**hyper, "epochs": epochs}
    if algorithm == PROJECT and hyper:
        raise JobSpecError(
            "hyperparameters", "a project job takes none; pass options to its command (after --) instead"
        )
    try:
        hyper = workload.schema.validate(hyper, prefix="hyperparameters") if algorithm != PROJECT else {}
    except ValidationError as exc:
        raise JobSpecError(exc.field, exc.message) from None
    cv = _int(body, "cv", None, minimum=2, maximum=50, nullable=True)
    if cv is not None:
        if workload.category != "sklearn":
            raise JobSpecError(
                "cv", f"cross-validation needs a scikit-learn algorithm; {algorithm} is {workload.category}"
            )
        if body.get("num_workers", 1) != 1:
            raise JobSpecError("cv", "runs one task per fold; leave num_workers at 1")
    script = _script(body.get("script")) if algorithm == "script" else None
    if body.get("script") is not None and algorithm != "script":
        raise JobSpecError("script", f"a script job has algorithm 'script', not {algorithm!r}")
    if algorithm == "script":
        hyper = {}
    project = command = None
    if algorithm == PROJECT:
        project, command = _project(body.get("project")), _command(body.get("command"))
        try:  # what its tasks will be sent (attempts.py), checked against the workload's own schema now
            workload.schema.validate(
                {
                    "manifest": project["manifest_id"],
                    "command": command,
                    "env": project["env"],
                    "output_dir": DEFAULT_OUTPUT_DIR,
                }
            )
        except ValidationError as exc:
            raise JobSpecError(exc.field.replace("manifest", "project.manifest_id", 1), exc.message) from None
        if cv is not None:
            raise JobSpecError("cv", "a project job runs its own command; cross-validate inside it")
    else:
        for key in ("project", "command"):
            if body.get(key) is not None:
                raise JobSpecError(key, f"is for project jobs (algorithm {PROJECT!r}), not {algorithm!r}")
    sweep = None
    if body.get("sweep") is not None:
        if algorithm == PROJECT:
            raise JobSpecError("sweep", "a project job has no parameters to sweep; submit one job per setting")
        if cv is not None or body.get("num_workers", 1) != 1:
            raise JobSpecError("sweep", "a sweep runs one task per trial; use it without cv and num_workers")
        regression = bool(dataset) and dataset_task(dataset, dataset_params) == REGRESSION
        try:
            parsed = parse_sweep(body["sweep"], workload, regression)
        except ValidationError as exc:
            raise JobSpecError(exc.field, exc.message) from None
        sweep = {**parsed.to_dict(), "budget": budget(parsed)}
    keep_models = _keep_models(body.get("keep_models"), sweep is not None)
    name = _str(body, "name") or default_name(algorithm, dataset)
    if len(name) > 200:
        raise JobSpecError("name", f"is {len(name)} characters long; at most 200 allowed")
    model_name = _str(body, "model_name")
    if model_name and (len(model_name) > 128 or not _NAME.match(model_name)):
        raise JobSpecError("model_name", "may only hold letters, digits, '.', '_' and '-' (at most 128)")
    pool = _pool(body.get("pool"))
    gpus, gpu_memory, gpu_fraction = _gpu_share(body)
    priority = _int(body, "priority", 0, minimum=-1000, maximum=1000)
    timeout = body.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout):
            raise JobSpecError("timeout", f"must be a number of seconds, got {timeout!r}")
        if timeout <= 0:
            raise JobSpecError("timeout", f"must be > 0 seconds, got {timeout!r}")
    return JobSpec(
        name=name,
        algorithm=algorithm,
        dataset=dataset,
        dataset_params=dataset_params,
        hyperparameters=hyper,
        num_workers=_int(body, "num_workers", 1, minimum=1, maximum=MAX_WORKERS),
        epochs=epochs,
        gpus=gpus,
        priority=priority,
        max_retries=_int(body, "max_retries", 2, minimum=0, maximum=100),
        timeout=float(timeout) if timeout is not None else None,
        constraints=_pool_constraint(_constraints(body.get("constraints")), pool),
        model_name=model_name,
        cv=cv,
        sweep=sweep,
        script=script,
        project=project,
        command=command,
        group=_group(body.get("group")),
        tags=_tags(body.get("tags")),
        keep_models=keep_models,
        dataset_version=_dataset_version(body.get("dataset_version")),
        pool=pool,
        preemptible=_bool(body, "preemptible", priority < 0),
        allow_restart=_bool(body, "allow_restart", False),
        gpu_memory=gpu_memory,
        gpu_fraction=gpu_fraction,
    )


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise JobSpecError(key, f"must be true or false, got {str(value)[:80]!r}")
    return value


MAX_GPU_MEMORY = 1 << 50  # 1 PiB: bounds gpu_memory well below int64 (TaskSpec, BSON)


def _gpu_share(body: dict[str, Any]) -> tuple[int, int, float]:
    """(gpus, gpu_memory, gpu_fraction): `gpus` is a whole number, or a fraction below 1 (the share of one GPU's
    memory); `gpu_memory` a size ('6GiB' or bytes) of one GPU, the two shares exclusive and only with one GPU."""
    raw = body.get("gpus", 0)
    fraction = body.get("gpu_fraction")
    if isinstance(raw, float) and 0 < raw < 1:
        if fraction is not None:
            raise JobSpecError("gpus", "give a fraction either as gpus or as gpu_fraction, not both")
        fraction, raw = raw, 1
    gpus = _int({"gpus": raw}, "gpus", 0, minimum=0, maximum=64)
    share = 0.0
    if fraction is not None and fraction != 0:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
            raise JobSpecError("gpu_fraction", f"must be a share of one GPU between 0 and 1, got {fraction!r}")
        share = float(fraction)
    memory_raw = body.get("gpu_memory")
    memory = 0
    if memory_raw is not None and memory_raw != 0:
        if isinstance(memory_raw, bool) or not isinstance(memory_raw, int | str):
            raise JobSpecError("gpu_memory", f"must be a size such as 6GiB or bytes, got {memory_raw!r}")
        try:
            memory = memory_raw if isinstance(memory_raw, int) else parse_size(memory_raw, "gpu_memory")
        except ValueError as exc:
            raise JobSpecError("gpu_memory", str(exc)) from None
        if memory < 1 << 20:
            raise JobSpecError("gpu_memory", f"must be at least 1MiB, got {memory_raw!r}")
        if memory > MAX_GPU_MEMORY:  # no GPU has more; a larger number would wait forever (and overflow int64)
            raise JobSpecError("gpu_memory", f"must be at most 1PiB (the memory of one GPU), got {memory_raw!r}")
    if memory and share:
        raise JobSpecError("gpu_memory", "give either gpu_memory or a fraction of a GPU, not both")
    if (memory or share) and gpus not in (0, 1):
        raise JobSpecError("gpus", f"a task shares one GPU by memory: gpus must be 1 with a share, got {gpus}")
    return (1 if memory or share else gpus), memory, share


def _pool(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not POOL_NAME.match(value):
        raise JobSpecError("pool", f"must be a pool name ([a-z0-9][a-z0-9._-]{{0,62}}), got {str(value)[:80]!r}")
    return value


def _pool_constraint(constraints: Constraints, pool: str) -> Constraints:
    """`pool: NAME` is the label constraint pool=NAME: only that pool's agents take the job."""
    if not pool:
        return constraints
    given = constraints.labels.get(POOL_LABEL)
    if given is not None and given != pool:
        raise JobSpecError("pool", f"names pool {pool!r} but constraints.labels.pool is {given!r}")
    return Constraints(constraints.on, constraints.not_on, {**constraints.labels, POOL_LABEL: pool})


def _dataset_version(value: Any) -> dict[str, Any] | None:
    """The version the controller's catalog pinned (never typed by a user: it names `dataset: NAME[:VERSION]`)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"name", "version", "content_id", "source"}:
        raise JobSpecError("dataset_version", "must be {name, version, content_id, source}; name the dataset instead")
    if not isinstance(value["name"], str) or not _NAME.match(value["name"]) or len(value["name"]) > 128:
        raise JobSpecError("dataset_version.name", f"is not a dataset name: {str(value['name'])[:80]!r}")
    version = value["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise JobSpecError("dataset_version.version", f"must be a version number >= 1, got {version!r}")
    if not isinstance(value["content_id"], str) or not _SHA256.match(value["content_id"]):
        raise JobSpecError("dataset_version.content_id", "must be 64 lowercase hex chars (a sha256)")
    if value["source"] not in SOURCES:
        raise JobSpecError("dataset_version.source", f"must be upload, s3 or file, got {value['source']!r}")
    return dict(value)


def spec_algorithm(body: dict[str, Any]) -> Any:
    """The algorithm `parse_job_spec` will read from `body` (a script or project job may leave it out)."""
    if body.get("algorithm"):
        return body["algorithm"]
    if body.get("script") is not None:
        return "script"
    return PROJECT if body.get("project") is not None else body.get("algorithm")


def default_name(algorithm: Any, dataset: str) -> str:
    """A job's name when the spec gives none. The dataset catalog passes an uploaded dataset's own name, so such a
    job is not named after the user:<sha256> reference it runs on."""
    return f"{algorithm}-{dataset}" if dataset else str(algorithm)


def _keep_models(value: Any, sweep: bool) -> str:
    """best (default) | all | none: which trials' models a sweep copies to the blob store and registers."""
    if value is None or value == "":
        return "best"
    if value not in KEEP_MODELS:
        raise JobSpecError("keep_models", f"must be one of {', '.join(KEEP_MODELS)}, got {value!r:.80}")
    if not sweep and value != "best":
        raise JobSpecError("keep_models", "is for sweeps (trials' models); a single job registers its one model")
    return str(value)


def _label_problem(text: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "may not hold control characters (newlines, tabs)"
    return ""


def _group(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise JobSpecError("group", f"must be a string, got {value!r:.80}")
    group = value.strip()
    if len(group) > MAX_GROUP:
        raise JobSpecError("group", f"is {len(group)} characters long; at most {MAX_GROUP} allowed")
    problem = _label_problem(group)
    if problem:
        raise JobSpecError("group", problem)
    return group


def _tags(value: Any) -> tuple[str, ...]:
    """A list of short labels (one string is one tag); blanks are refused, repeats kept once."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise JobSpecError("tags", f"must be a list of strings, got {value!r:.80}")
    tags: list[str] = []
    for i, tag in enumerate(value):
        if not isinstance(tag, str):
            raise JobSpecError(f"tags[{i}]", f"must be a string, got {tag!r:.80}")
        tag = tag.strip()
        if not tag:
            raise JobSpecError(f"tags[{i}]", "is empty")
        if len(tag) > MAX_TAG:
            raise JobSpecError(f"tags[{i}]", f"is {len(tag)} characters long; at most {MAX_TAG} allowed")
        problem = _label_problem(tag)
        if problem:
            raise JobSpecError(f"tags[{i}]", problem)
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise JobSpecError("tags", f"has {len(tags)} tags; at most {MAX_TAGS} allowed")
    return tuple(tags)


def _project(value: Any) -> dict[str, Any]:
    """A project job's snapshot: which manifest (its blob is checked by the controller at submit), its size, the
    env choice and the git facts recorded with it."""
    if not isinstance(value, dict):
        raise JobSpecError(
            "project", "is required for a project job: {manifest_id, files, bytes, env, git} (upload it first)"
        )
    for key in value:
        if key not in ("manifest_id", "files", "bytes", "env", "git"):
            raise JobSpecError(f"project.{key}", "unknown field (allowed: manifest_id, files, bytes, env, git)")
    manifest_id = value.get("manifest_id")
    if not isinstance(manifest_id, str) or not _SHA256.match(manifest_id):
        raise JobSpecError(
            "project.manifest_id", f"must be the manifest's sha256 (64 lowercase hex), got {manifest_id!r:.80}"
        )
    try:
        files = _int(value, "files", 0, minimum=0, maximum=MAX_FILES)
        size = _int(value, "bytes", 0, minimum=0, maximum=MAX_PROJECT_BYTES)
    except JobSpecError as exc:
        raise JobSpecError(f"project.{exc.field}", exc.message) from None
    env = value.get("env", "auto")
    try:
        env = check_env_choice("auto" if env is None or env == "" else env, "project.env")
    except ValidationError as exc:
        raise JobSpecError(exc.field, exc.message) from None
    return {"manifest_id": manifest_id, "files": files, "bytes": size, "env": env, "git": _git(value.get("git"))}


def _git(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise JobSpecError("project.git", "must be an object of git facts or null")
    for key in value:
        if key not in _GIT_KEYS:
            raise JobSpecError(f"project.git.{key}", f"unknown field (allowed: {', '.join(_GIT_KEYS)})")
    out: dict[str, Any] = {}
    for key in ("commit", "branch", "diff", "subdir", "remote"):
        text = value.get(key) or ""
        if not isinstance(text, str):
            raise JobSpecError(f"project.git.{key}", f"must be a string, got {type(text).__name__}")
        limit = MAX_GIT_DIFF if key == "diff" else 4096
        if len(text) > limit:
            raise JobSpecError(f"project.git.{key}", f"is {len(text)} characters long; at most {limit} allowed")
        out[key] = text
    for key in ("dirty", "diff_truncated"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            raise JobSpecError(f"project.git.{key}", f"must be true or false, got {flag!r}")
        out[key] = flag
    untracked = value.get("untracked") or []
    if not isinstance(untracked, list) or not all(isinstance(u, str) for u in untracked) or len(untracked) > 1000:
        raise JobSpecError("project.git.untracked", "must be a list of paths (at most 1000)")
    out["untracked"] = list(untracked)
    return out


def _command(value: Any) -> list[str]:
    """A project job's command: a list of strings, or one string split as a shell would (core.project_spec: the
    SDK, the CLI and the GUI check it with the same function before they upload)."""
    try:
        return check_command(value)
    except ValidationError as exc:
        raise JobSpecError(exc.field, exc.message) from None


def _script(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JobSpecError("script", "is required for algorithm 'script': {name, source, args, requirements}")
    for key in value:
        if key not in ("name", "source", "args", "requirements", "sha256"):
            raise JobSpecError(f"script.{key}", "unknown field (allowed: name, source, args, requirements)")
    name, source = value.get("name"), value.get("source")
    if not isinstance(name, str) or not _SCRIPT_NAME.match(name):
        raise JobSpecError("script.name", f"must be a plain .py file name, got {name!r}")
    if not isinstance(source, str) or not source.strip():
        raise JobSpecError("script.source", "must hold the script's text")
    if len(source.encode()) > MAX_SCRIPT_BYTES:
        raise JobSpecError(
            "script.source", f"is {len(source.encode())} bytes; scripts may be {MAX_SCRIPT_BYTES} at most"
        )
    try:
        compile(source, name, "exec")
    except SyntaxError as exc:
        raise JobSpecError("script.source", f"{name} line {exc.lineno}: {exc.msg}") from None
    lists = {}
    for key in ("args", "requirements"):
        items = value.get(key) or []
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items) or len(items) > 256:
            raise JobSpecError(f"script.{key}", "must be a list of strings (at most 256)")
        lists[key] = items
    digest = hashlib.sha256(source.encode()).hexdigest()
    return {"name": name, "source": source, "sha256": digest, **lists}


def _str(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise JobSpecError(key, "is required")
        return ""
    if not isinstance(value, str):
        raise JobSpecError(key, f"must be a string, got {value!r}")
    return value


def _int(
    body: dict[str, Any], key: str, default: int | None, *, minimum: int, maximum: int, nullable: bool = False
) -> Any:
    value = body.get(key, default)
    if value is None and (nullable or default is None):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise JobSpecError(key, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise JobSpecError(key, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _constraints(value: Any) -> Constraints:
    if value is None:
        return Constraints()
    if not isinstance(value, dict):
        raise JobSpecError("constraints", "must be a mapping with on, not_on and labels")
    for key in value:
        if key not in ("on", "not_on", "labels"):
            raise JobSpecError(f"constraints.{key}", "unknown constraint (allowed: on, not_on, labels)")

    def names(key: str) -> tuple[str, ...]:
        raw = value.get(key) or []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            raise JobSpecError(f"constraints.{key}", "must be an agent id or name, or a list of them")
        return tuple(raw)

    labels = value.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise JobSpecError("constraints.labels", "must be a mapping of label keys to string values")
    return Constraints(names("on"), names("not_on"), dict(labels))
