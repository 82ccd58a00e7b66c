"""Built-in datasets: the ones that ship inside scikit-learn, and seeded synthetic ones.

Nothing is downloaded at run time. Each dataset says which task it poses, so a workload
can refuse one it cannot learn (a classifier on a regression target) before anything runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.workloads.schema import ParamSpec, WorkloadSchema

CLASSIFICATION, REGRESSION = "classification", "regression"
# A folder of class_name/*.png|*.jpg: the job's dataset version (any name; the controller resolves NAME[:VERSION]
# and the agent mounts it at TENSORFLEET_DATASET_DIR), or none when the workload's data_dir parameter names one.
IMAGES = "images"
_SEED = ParamSpec("random_state", "int", 42, "generator seed", minimum=0, maximum=2**32 - 1)
_SIZE = (
    ParamSpec("n_samples", "int", 1000, "rows", minimum=10, maximum=10_000_000),
    ParamSpec("n_features", "int", 20, "feature columns", minimum=1, maximum=10_000),
    ParamSpec("n_informative", "int", 10, "informative features (at most n_features)", minimum=1, maximum=10_000),
)


@dataclass(frozen=True)
class DatasetDef:
    name: str
    task: str  # classification | regression
    summary: str
    schema: WorkloadSchema = field(default_factory=WorkloadSchema)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "summary": self.summary,
            "params": [p.to_dict() for p in self.schema.params],
        }


BUILTIN: tuple[DatasetDef, ...] = (
    DatasetDef("iris", CLASSIFICATION, "150 iris flowers, 4 features, 3 species"),
    DatasetDef("wine", CLASSIFICATION, "178 wines, 13 features, 3 cultivars"),
    DatasetDef("breast_cancer", CLASSIFICATION, "569 tumours, 30 features, benign/malignant"),
    DatasetDef("digits", CLASSIFICATION, "1797 8x8 handwritten digits, 10 classes"),
    DatasetDef("diabetes", REGRESSION, "442 patients, 10 features, disease progression after a year"),
    DatasetDef(
        "make_classification",
        CLASSIFICATION,
        "synthetic classification (scikit-learn make_classification)",
        WorkloadSchema((*_SIZE, ParamSpec("n_classes", "int", 2, "classes", minimum=2, maximum=100), _SEED)),
    ),
    DatasetDef(
        "make_regression",
        REGRESSION,
        "synthetic regression (scikit-learn make_regression)",
        WorkloadSchema((*_SIZE, ParamSpec("noise", "float", 0.1, "gaussian noise on the target", minimum=0), _SEED)),
    ),
)
_BY_NAME = {d.name: d for d in BUILTIN}


USER_PREFIX = "user:"  # user data: "user:<sha256>", the file travels as a task input


def is_user_dataset(name: str) -> bool:
    return name.startswith(USER_PREFIX)


def datasets_for(tasks: tuple[str, ...]) -> list[str]:
    return [d.name for d in BUILTIN if d.task in tasks]


def check_dataset(
    workload: str,
    tasks: tuple[str, ...],
    name: str,
    params: dict[str, Any],
    field: str = "dataset",
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Refuse a dataset the workload cannot use; return its parameters with defaults (ValidationError names it)."""
    params_field = f"{field}_params"
    if not tasks:
        if name:
            raise ValidationError(field, f"{workload} takes no dataset")
        if params:
            raise ValidationError(params_field, f"{workload} takes no dataset")
        return {}
    if tasks == (IMAGES,):
        if params:
            raise ValidationError(params_field, f"{workload} takes no dataset parameters (its folder is the data)")
        if len(name) > 256:
            raise ValidationError(field, f"is {len(name)} characters long; at most 256 allowed")
        return {}
    if only and name not in only:
        raise ValidationError(field, f"{workload} trains on {', '.join(only)}, not {name or 'nothing'}")
    if not name:
        raise ValidationError(field, f"{workload} needs a dataset (one of {', '.join(datasets_for(tasks))})")
    if is_user_dataset(name):
        return _check_user(workload, tasks, name, params, f"{field}_params")
    dataset = _BY_NAME.get(name)
    if dataset is None:
        raise ValidationError(field, f"unknown dataset {name!r} (available: {', '.join(datasets_for(tasks))})")
    if dataset.task not in tasks:
        kind = "a classifier" if tasks == (CLASSIFICATION,) else f"for {' and '.join(tasks)}"
        raise ValidationError(field, f"{workload} is {kind}; {name} is a {dataset.task} dataset")
    values = dataset.schema.validate(params, prefix=params_field)
    if "n_informative" in values and values["n_informative"] > values["n_features"]:
        raise ValidationError(f"{params_field}.n_informative", "must be at most n_features")
    return values


def _check_user(workload: str, tasks: tuple[str, ...], name: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    from tensorfleet_agent.runtime.blobs import SHA256_RE

    if not SHA256_RE.match(name[len(USER_PREFIX) :]):
        raise ValidationError(where.removesuffix("_params"), f"{name[:80]!r} is not user:<sha256>")
    for key in ("target", "file", "task"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise ValidationError(f"{where}.{key}", "is required for user data")
    if params["task"] not in tasks:
        raise ValidationError(where.removesuffix("_params"), f"{workload} cannot learn a {params['task']} target")
    return {k: params[k] for k in ("target", "file", "task")}


def dataset_task(name: str, params: dict[str, Any]) -> str:
    return str(params["task"]) if is_user_dataset(name) else get_dataset(name).task


def load_user(path: Any, params: dict[str, Any]) -> tuple[Any, Any, list[str], list[str]]:
    """A user's CSV: numeric feature columns and one target column; every problem names its column and row."""
    import csv
    import math

    import numpy as np

    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise ValueError("the dataset has no data rows")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    target = str(params["target"])
    if target not in header:
        raise ValueError(f"target column {target!r} is not in the dataset (columns: {', '.join(header)})")
    t = header.index(target)
    features = [h for i, h in enumerate(header) if i != t]
    x = np.empty((len(body), len(features)))
    labels = []
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(f"row {r} has {len(row)} fields; the header has {len(header)}")
        col = 0
        for i, cell in enumerate(row):
            if i == t:
                labels.append(cell.strip())
                continue
            try:
                value = float(cell)
            except ValueError:
                raise ValueError(f"column {header[i]!r} row {r}: {cell!r} is not a number") from None
            if math.isnan(value) or not cell.strip():
                raise ValueError(f"column {header[i]!r} row {r}: missing value")
            x[r - 2, col] = value
            col += 1
    if params["task"] == CLASSIFICATION:
        classes = sorted(set(labels))
        index = {c: k for k, c in enumerate(classes)}
        return x, np.array([index[v] for v in labels]), features, classes
    try:
        y = np.array([float(v) for v in labels])
    except ValueError:
        raise ValueError(f"target column {target!r} is not numeric: it cannot be a regression target") from None
    return x, y, features, []


def data_sha256(x: Any, y: Any) -> str:
    """The sha256 of the data a task trains on: each array's shape, then its values as little-endian float64.

    A built-in dataset has no file whose sha256 a model's lineage could name; this names its content
    instead (which the scikit-learn version and, for the synthetic ones, the parameters decide), so two
    versions trained on the same data show the same sha256.
    """
    import hashlib

    import numpy as np

    hasher = hashlib.sha256()
    for values in (x, y):
        array = np.ascontiguousarray(values, dtype="<f8")
        hasher.update(repr(array.shape).encode())
        hasher.update(array.data)  # contiguous: hashed in place, not copied
    return hasher.hexdigest()


def get_dataset(name: str) -> DatasetDef:
    return _BY_NAME[name]


_T = TypeVar("_T")
# see load(); the dict: what was computed from those arrays (derived())
_last: tuple[str, Any, Any, list[str], list[str], dict[str, Any]] | None = None


def load(name: str, params: dict[str, Any]) -> tuple[Any, Any, list[str], list[str]]:
    """(X, y, feature names, class names); class names are empty for regression.

    A dataset is made (or a user's CSV read) once per process and handed out again to the next call with the same
    name and parameters: a sweep's bundled trials (TaskSpec.trials) all run in one worker, and making iris or
    parsing a 5,000-row CSV (~14 ms) would cost each more than its fit. A user's dataset is named by its file's
    sha256 (user:<sha256>), so the same name is the same data. Only the last one is kept, and for one job's tasks
    only: a warm worker that serves another job's task next forgets it first (worker._forget_data), so one job's
    data neither stays resident for another nor counts against its memory limit. The arrays are
    handed out read-only, so no task can change what the next one trains on (the workloads split them into copies);
    the name lists are copies."""
    global _last
    path = None
    if is_user_dataset(name):
        from tensorfleet_agent import task

        path = task.input_path(str(params["file"]))  # this task was sent the file, also when its data is cached
    key = json.dumps([name, params], sort_keys=True)
    last = _last  # read once: a thread (the controller's shard merge) may set it meanwhile
    if last is None or last[0] != key:
        x, y, features, classes = load_user(path, params) if path is not None else _make(name, params)
        for array in (x, y):
            array.setflags(write=False)
        last = _last = (key, x, y, features, classes, {})
    _key, x, y, features, classes, _derived = last
    return x, y, list(features), list(classes)


def derived(x: Any, y: Any, what: str, make: Callable[[], _T]) -> _T:
    """`make()` once for the arrays load() handed out last, kept with them under `what` (a sweep's bundled trials
    split and hash their data once: sklearn_basic._split) and dropped with them, by forget() or the next dataset;
    made afresh for other arrays."""
    last = _last  # read once (see load)
    if last is None or last[1] is not x or last[2] is not y:
        return make()
    memo = last[5]
    if what not in memo:
        memo[what] = make()
    value: _T = memo[what]
    return value


def forget() -> None:
    """Drop the dataset load() keeps and what was derived from it (the next task is another job's)."""
    global _last
    _last = None


def _make(name: str, params: dict[str, Any]) -> tuple[Any, Any, list[str], list[str]]:
    """A built-in dataset, made afresh."""
    from sklearn import datasets

    if name == "make_classification":
        x, y = datasets.make_classification(
            n_samples=params["n_samples"],
            n_features=params["n_features"],
            n_informative=params["n_informative"],
            n_redundant=0,
            n_classes=params["n_classes"],
            random_state=params["random_state"],
        )
        return x, y, [f"x{i}" for i in range(x.shape[1])], [str(c) for c in range(params["n_classes"])]
    if name == "make_regression":
        x, y = datasets.make_regression(
            n_samples=params["n_samples"],
            n_features=params["n_features"],
            n_informative=params["n_informative"],
            noise=params["noise"],
            random_state=params["random_state"],
        )
        return x, y, [f"x{i}" for i in range(x.shape[1])], []
    loaders = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "diabetes": datasets.load_diabetes,
    }
    bunch = loaders[name]()
    features = [str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])])]
    classes = [str(t) for t in getattr(bunch, "target_names", [])] if get_dataset(name).task == CLASSIFICATION else []
    return bunch.data, bunch.target, features, classes
