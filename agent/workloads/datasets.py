"""Built-in datasets: the ones that ship inside scikit-learn, and seeded synthetic ones.

Nothing is downloaded at run time. Each dataset says which task it poses, so a workload
can refuse one it cannot learn (a classifier on a regression target) before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.workloads.schema import ParamSpec, WorkloadSchema

CLASSIFICATION, REGRESSION = "classification", "regression"
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
    if only and name not in only:
        raise ValidationError(field, f"{workload} trains on {', '.join(only)}, not {name or 'nothing'}")
    if not name:
        raise ValidationError(field, f"{workload} needs a dataset (one of {', '.join(datasets_for(tasks))})")
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


def get_dataset(name: str) -> DatasetDef:
    return _BY_NAME[name]


def load(name: str, params: dict[str, Any]) -> tuple[Any, Any, list[str], list[str]]:
    """(X, y, feature names, class names) for a built-in dataset; class names are empty for regression."""
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
