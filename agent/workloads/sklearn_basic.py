"""The seed's four scikit-learn classifiers on the datasets that ship inside scikit-learn.

Each reports train_accuracy, test_accuracy and training_time and saves the fitted
model with skops (a safe format) as the task's "model" artifact.
"""

from __future__ import annotations

import time
from typing import Any

from tensorfleet_agent import task

TEST_SIZE = 0.2
SPLIT_SEED = 42


def load_builtin(name: str) -> tuple[Any, Any, list[str], list[str]]:
    from sklearn import datasets

    loaders = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
    }
    bunch = loaders[name]()
    features = [str(f) for f in getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])])]
    return bunch.data, bunch.target, features, [str(t) for t in bunch.target_names]


def _fit(estimator: Any) -> None:
    from sklearn.model_selection import train_test_split
    from skops.io import dump

    spec = task.spec()
    dataset = str(spec["dataset"])
    x, y, features, classes = load_builtin(dataset)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    print(
        f"{spec['workload']} on {dataset}: {len(x_train)} train / {len(x_test)} test rows, "
        f"{len(features)} features, {len(classes)} classes"
    )
    task.progress(0.1)
    start = time.perf_counter()
    estimator.fit(x_train, y_train)
    training_time = time.perf_counter() - start
    task.progress(0.8)
    train_acc = float(estimator.score(x_train, y_train))
    test_acc = float(estimator.score(x_test, y_test))
    task.report(step=0, train_accuracy=train_acc, test_accuracy=test_acc, training_time=training_time)
    print(f"train_accuracy={train_acc:.4f} test_accuracy={test_acc:.4f} training_time={training_time:.3f}s")
    path = task.checkpoint_dir().parent / "model.skops"
    dump(estimator, path)
    task.save_artifact(path, kind="model")
    task.progress(1.0)


def random_forest(params: dict[str, Any]) -> None:
    from sklearn.ensemble import RandomForestClassifier

    _fit(RandomForestClassifier(n_jobs=1, **params))


def logistic_regression(params: dict[str, Any]) -> None:
    from sklearn.linear_model import LogisticRegression

    _fit(LogisticRegression(**params))


def svm(params: dict[str, Any]) -> None:
    from sklearn.svm import SVC

    _fit(SVC(**params))


def decision_tree(params: dict[str, Any]) -> None:
    from sklearn.tree import DecisionTreeClassifier

    _fit(DecisionTreeClassifier(**params))
