"""The one namespace of workloads: name -> schema, entry point and requirements.

Entry points are "module:function" strings so that listing and validating
workloads never imports the heavy libraries they use.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from tensorfleet_agent.core import project_layout
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.workloads.datasets import CLASSIFICATION, IMAGES, REGRESSION, datasets_for
from tensorfleet_agent.workloads.schema import ParamSpec, WorkloadSchema


@dataclass(frozen=True)
class WorkloadDef:
    name: str
    category: str  # "diagnostic" | "sklearn" | "torch" | "script"
    summary: str
    schema: WorkloadSchema
    entry: str  # "package.module:function", called in a worker as fn(params)
    requires: tuple[str, ...] = ()  # import names that must be installed on the agent
    tasks: tuple[str, ...] = ()  # dataset tasks it learns (classification, regression); empty = takes no dataset
    only_datasets: tuple[str, ...] = ()  # when it needs particular data (the CNN wants images)
    iterative: bool = False  # reports test metrics while it trains (what a sweep's pruner needs)
    # What the fork server may import for the next task once a task of this workload came (runtime/forkserver.py):
    # its libraries, never torch.
    warm: tuple[str, ...] = ()

    def installed(self) -> bool:
        for mod in self.requires:
            try:
                if importlib.util.find_spec(mod) is None:
                    return False
            except (ImportError, ValueError):  # a broken or blocked package counts as missing
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "summary": self.summary,
            "params": [p.to_dict() for p in self.schema.params],
            "requires": list(self.requires),
            "tasks": list(self.tasks),
            "datasets": list(self.only_datasets) or datasets_for(self.tasks),
            "iterative": self.iterative,
        }


_DIAG = "tensorfleet_agent.workloads.diagnostic"

_BUILTIN: tuple[WorkloadDef, ...] = (
    WorkloadDef("noop", "diagnostic", "Does nothing; measures platform overhead.", WorkloadSchema(), f"{_DIAG}:noop"),
    WorkloadDef(
        "sleep",
        "diagnostic",
        "Sleeps, reporting progress; for scheduling and cancel tests.",
        WorkloadSchema((ParamSpec("seconds", "float", 1.0, "how long to sleep", minimum=0, maximum=7 * 86400),)),
        f"{_DIAG}:sleep",
    ),
    WorkloadDef(
        "emit",
        "diagnostic",
        "Reports `points` metric points at `rate` per second (0 = as fast as possible).",
        WorkloadSchema(
            (
                ParamSpec("points", "int", 100, "how many metric points", minimum=0, maximum=10_000_000),
                ParamSpec("rate", "float", 0.0, "points per second; 0 = unthrottled", minimum=0),
                ParamSpec("name", "str", "value", "metric name"),
            )
        ),
        f"{_DIAG}:emit",
    ),
    WorkloadDef(
        "fail",
        "diagnostic",
        "Fails on purpose: raises, exits with a code, or segfaults.",
        WorkloadSchema(
            (
                ParamSpec("mode", "str", "exception", "how to fail", choices=("exception", "exit", "segfault")),
                ParamSpec("code", "int", 3, "exit code for mode=exit", minimum=0, maximum=255),
                ParamSpec("message", "str", "failing on purpose", "exception message for mode=exception"),
            )
        ),
        f"{_DIAG}:fail",
    ),
    WorkloadDef(
        "artifact",
        "diagnostic",
        "Writes `bytes` random bytes as an artifact (and optionally a checkpoint); checks the blob path.",
        WorkloadSchema(
            (
                ParamSpec("bytes", "int", 1024, "size of the file", minimum=0, maximum=1 << 34),
                ParamSpec("kind", "str", "report", "artifact kind"),
                ParamSpec("checkpoint", "bool", False, "also publish the file as a checkpoint"),
            )
        ),
        f"{_DIAG}:artifact",
    ),
    WorkloadDef(
        "allocate",
        "diagnostic",
        "Holds `megabytes` of resident memory for `seconds`; for memory-limit checks.",
        WorkloadSchema(
            (
                ParamSpec("megabytes", "int", 100, "resident memory to touch", minimum=0, maximum=1 << 20),
                ParamSpec("seconds", "float", 5.0, "how long to hold it", minimum=0, maximum=86400),
            )
        ),
        f"{_DIAG}:allocate",
    ),
)

_SK = "tensorfleet_agent.workloads.sklearn_basic"
_BOTH = (CLASSIFICATION, REGRESSION)
_SEED = ParamSpec("random_state", "int", 42, "seed of the estimator", minimum=0, maximum=2**32 - 1)
_DEPTH = ParamSpec("max_depth", "int", None, "maximum tree depth; null = unlimited", minimum=1, nullable=True)


def _sklearn(
    name: str, summary: str, tasks: tuple[str, ...], *params: ParamSpec, iterative: bool = False
) -> WorkloadDef:
    entry, requires = f"{_SK}:{name}", ("sklearn", "skops")
    # skops.io imports every scikit-learn module (its list of estimators): the family's own is among them;
    # sklearn_warm fills scikit-learn's per-process caches, inherited by each forked worker
    warm = (_SK, "skops.io", "tensorfleet_agent.workloads.sklearn_warm")
    return WorkloadDef(
        name, "sklearn", summary, WorkloadSchema(params), entry, requires, tasks, iterative=iterative, warm=warm
    )


_BUILTIN += (
    _sklearn(
        "random_forest",
        "Random forest (scikit-learn); a regressor on regression datasets.",
        _BOTH,
        ParamSpec("n_estimators", "int", 100, "number of trees", minimum=1, maximum=100_000),
        _DEPTH,
        ParamSpec("min_samples_split", "int", 2, "samples needed to split a node", minimum=2),
        _SEED,
    ),
    _sklearn(
        "logistic_regression",
        "Logistic regression classifier (scikit-learn).",
        (CLASSIFICATION,),
        ParamSpec("max_iter", "int", 1000, "solver iterations", minimum=1, maximum=1_000_000),
        ParamSpec("C", "float", 1.0, "inverse regularisation strength", minimum=1e-12),
        _SEED,
    ),
    _sklearn(
        "svm",
        "Support vector machine (SVC; SVR on regression datasets).",
        _BOTH,
        ParamSpec("kernel", "str", "rbf", "kernel", choices=("linear", "poly", "rbf", "sigmoid")),
        ParamSpec("C", "float", 1.0, "regularisation parameter", minimum=1e-12),
        ParamSpec("gamma", "str", "scale", "kernel coefficient", choices=("scale", "auto")),
        _SEED,
    ),
    _sklearn(
        "decision_tree",
        "Decision tree (scikit-learn); a regressor on regression datasets.",
        _BOTH,
        _DEPTH,
        ParamSpec("min_samples_split", "int", 2, "samples needed to split a node", minimum=2),
        _SEED,
    ),
    _sklearn(
        "gradient_boosting",
        "Histogram gradient boosting (scikit-learn HistGradientBoosting*).",
        _BOTH,
        ParamSpec("learning_rate", "float", 0.1, "shrinkage of each tree", minimum=1e-6, maximum=10),
        ParamSpec("max_iter", "int", 100, "boosting iterations", minimum=1, maximum=100_000),
        _DEPTH,
        ParamSpec("max_leaf_nodes", "int", 31, "leaves per tree", minimum=2, maximum=100_000),
        _SEED,
        iterative=True,
    ),
    _sklearn(
        "knn",
        "k-nearest neighbours (scikit-learn KNeighbors*).",
        _BOTH,
        ParamSpec("n_neighbors", "int", 5, "neighbours that vote", minimum=1, maximum=100_000),
        ParamSpec("weights", "str", "uniform", "vote weights", choices=("uniform", "distance")),
        ParamSpec("p", "int", 2, "Minkowski power (1 = Manhattan, 2 = Euclidean)", minimum=1, maximum=10),
    ),
    _sklearn(
        "mlp",
        "Multi-layer perceptron (scikit-learn MLP*).",
        _BOTH,
        ParamSpec(
            "hidden_layer_sizes",
            "str",
            "100",
            "comma list of layer widths, e.g. 64,32",
            pattern=r"[1-9]\d{0,5}(,[1-9]\d{0,5}){0,9}",
        ),
        ParamSpec("alpha", "float", 1e-4, "L2 penalty", minimum=0),
        ParamSpec("learning_rate_init", "float", 1e-3, "initial learning rate", minimum=1e-8, maximum=10),
        ParamSpec("max_iter", "int", 200, "epochs", minimum=1, maximum=100_000),
        _SEED,
        iterative=True,
    ),
)

_TORCH = "tensorfleet_agent.workloads.torch_models"
_WIDTHS = r"[1-9]\d{0,5}(,[1-9]\d{0,5}){0,9}"
_TRAINING = (
    ParamSpec("epochs", "int", 5, "passes over the training data", minimum=1, maximum=100_000),
    ParamSpec("batch_size", "int", 64, "samples per step and rank", minimum=1, maximum=1_000_000),
    ParamSpec("lr", "float", 1e-3, "learning rate", minimum=1e-8, maximum=10),
    ParamSpec("optimizer", "str", "adam", "optimizer", choices=("adam", "sgd")),
    ParamSpec("weight_decay", "float", 0.0, "L2 penalty", minimum=0),
    ParamSpec("checkpoint_every", "int", 0, "save a checkpoint every N epochs (0 = never)", minimum=0),
    ParamSpec("seed", "int", 42, "seed of torch, numpy and the data order", minimum=0, maximum=2**32 - 1),
)
_BUILTIN += (
    WorkloadDef(
        "torch_mlp",
        "torch",
        "PyTorch multi-layer perceptron; num_workers > 1 trains with DistributedDataParallel across agents.",
        WorkloadSchema(
            (
                *_TRAINING,
                ParamSpec("hidden", "str", "64,64", "comma list of layer widths", pattern=_WIDTHS),
            )
        ),
        f"{_TORCH}:torch_mlp",
        ("torch", "safetensors", "sklearn"),
        (CLASSIFICATION,),
    ),
    WorkloadDef(
        "cnn",
        "torch",
        "Small PyTorch CNN on the 8x8 digits images; num_workers > 1 trains with DistributedDataParallel.",
        WorkloadSchema(_TRAINING),
        f"{_TORCH}:cnn",
        ("torch", "safetensors", "sklearn"),
        (CLASSIFICATION,),
        only_datasets=("digits",),
    ),
    WorkloadDef(
        "image_classifier",
        "torch",
        "Small ResNet-style CNN on an image folder dataset (class_name/*.png|*.jpg); num_workers > 1 trains with"
        " DistributedDataParallel.",
        WorkloadSchema(
            (
                ParamSpec("epochs", "int", 10, "passes over the training images", minimum=1, maximum=100_000),
                ParamSpec("batch_size", "int", 32, "images per step and rank", minimum=1, maximum=65_536),
                ParamSpec("lr", "float", 1e-3, "learning rate (Adam)", minimum=1e-8, maximum=10),
                ParamSpec(
                    "image_size", "int", 64, "images are resized to this many pixels square", minimum=8, maximum=1024
                ),
                ParamSpec(
                    "val_fraction",
                    "float",
                    0.2,
                    "share of each class held out to validate (a folder with train/ and val/ is split as it is)",
                    minimum=0,
                    maximum=0.9,
                ),
                ParamSpec("width", "int", 16, "channels of the first stage (x2, x4 after)", minimum=4, maximum=512),
                ParamSpec("weight_decay", "float", 0.0, "L2 penalty", minimum=0),
                ParamSpec("checkpoint_every", "int", 0, "save a checkpoint every N epochs (0 = never)", minimum=0),
                ParamSpec(
                    "seed", "int", 42, "seed of torch, the split and the data order", minimum=0, maximum=2**32 - 1
                ),
                ParamSpec(
                    "data_dir",
                    "str",
                    "",
                    "a folder on the agent to read instead of the job's dataset (empty: the dataset)",
                    pattern=r"(/[^\x00]{0,4095})?",
                ),
            )
        ),
        "tensorfleet_agent.workloads.image_classifier:image_classifier",
        ("torch", "safetensors", "PIL"),
        (IMAGES,),
    ),
)

_BUILTIN += (
    WorkloadDef(
        "script",
        "script",
        "Your own Python file, run as __main__ in a fresh worker with the task runtime; exit code 0 is success.",
        WorkloadSchema(
            (
                ParamSpec("script", "str", "", "the script's file name among the task's inputs"),
                ParamSpec("args", "list", [], "command-line arguments", maximum=256),
                ParamSpec(
                    "requirements", "list", [], "distributions that must be installed, e.g. numpy>=1.26", maximum=256
                ),
                ParamSpec("sha256", "str", "", "the script's sha256 (recorded for reproducibility)"),
            )
        ),
        "tensorfleet_agent.workloads.script:run",
    ),
    WorkloadDef(
        project_layout.WORKLOAD,
        "script",
        "Your own project folder, run with its command in its own environment (built with uv, cached); the"
        " command's exit code 0 is success.",
        WorkloadSchema(
            (
                ParamSpec("manifest", "str", "", "the project snapshot's manifest id (sha256)", pattern="[0-9a-f]{64}"),
                ParamSpec(
                    "command", "list", [], "the command and its arguments, e.g. python -m pkg.train", maximum=256
                ),
                ParamSpec(
                    "env",
                    "str",
                    "auto",
                    "auto, none, or the env file to build the env from: a path relative to the project, without '..'",
                    pattern=r"auto|none|(?![/\\])(?!(?:.*/)?\.\.(?:/|$))[^\x00-\x1f\x7f\\]{1,1024}",
                ),
                ParamSpec(
                    "output_dir",
                    "str",
                    project_layout.DEFAULT_OUTPUT_DIR,
                    "a folder relative to the project, without '..'",
                    pattern=r"(?!/)(?!(?:.*/)?\.\.(?:/|$))[^\x00]{1,1024}",
                ),
            )
        ),
        "tensorfleet_agent.workloads.project:run",
    ),
)

_BY_NAME = {w.name: w for w in _BUILTIN}


def all_workloads() -> tuple[WorkloadDef, ...]:
    return _BUILTIN


def available_workloads() -> tuple[WorkloadDef, ...]:
    """The workloads this machine can run (their requirements are installed)."""
    return tuple(w for w in _BUILTIN if w.installed())


def get_workload(name: str, *, field: str = "workload") -> WorkloadDef:
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise ValidationError(field, f"unknown workload {name!r} (known: {known})") from None
