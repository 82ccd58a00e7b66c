"""Merging a random forest trained in shards on several agents into one model (blocking: run in a thread).

Shards load with skops against an explicit allow-list of the types a forest is made of, never with
"trust everything". The merged forest is scored on the same seeded split the shards trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import blob_relpath

FOREST_TYPES = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "builtins.slice",
]


def merge_forest(
    shards: list[Path], dataset: str, dataset_params: dict[str, Any], out: Path, blobs_dir: Path
) -> dict[str, float]:
    """Concatenate the shards' trees, score the forest, write it with skops to `out`; returns its metrics."""
    from sklearn import metrics
    from sklearn.model_selection import train_test_split

    from tensorfleet_agent.workloads.datasets import CLASSIFICATION, dataset_task, is_user_dataset, load_user
    from tensorfleet_agent.workloads.datasets import load as load_dataset
    from tensorfleet_agent.workloads.sklearn_basic import SPLIT_SEED, TEST_SIZE
    from tensorfleet_agent.workloads.skops_files import skops_io

    skops = skops_io()  # not `import skops.io`: its estimator listing would load torch into the controller
    dump, get_untrusted_types, load = skops.dump, skops.get_untrusted_types, skops.load

    forests = []
    for path in shards:
        unexpected = [t for t in get_untrusted_types(file=path) if t not in FOREST_TYPES]
        if unexpected:
            raise ValueError(f"shard {path.name} holds types a forest does not: {', '.join(unexpected)}")
        forests.append(load(path, trusted=FOREST_TYPES))
    merged = forests[0]
    for other in forests[1:]:
        merged.estimators_ += other.estimators_
    merged.n_estimators = len(merged.estimators_)
    kind = dataset_task(dataset, dataset_params)
    if is_user_dataset(dataset):
        digest = dataset.split(":", 1)[1]
        x, y, _features, _classes = load_user(blobs_dir / blob_relpath(digest), dataset_params)
    else:
        x, y, _features, _classes = load_dataset(dataset, dataset_params)
    stratify = y if kind == CLASSIFICATION else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=stratify
    )
    predicted = merged.predict(x_test)
    if kind == CLASSIFICATION:
        values = {
            "train_accuracy": float(merged.score(x_train, y_train)),
            "test_accuracy": float(metrics.accuracy_score(y_test, predicted)),
            "f1_macro": float(metrics.f1_score(y_test, predicted, average="macro")),
        }
    else:
        values = {
            "r2": float(metrics.r2_score(y_test, predicted)),
            "mae": float(metrics.mean_absolute_error(y_test, predicted)),
        }
    values["n_estimators"] = float(merged.n_estimators)
    out.parent.mkdir(parents=True, exist_ok=True)
    dump(merged, out)
    return values


__all__ = ["FOREST_TYPES", "merge_forest"]
