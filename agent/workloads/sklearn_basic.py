"""scikit-learn estimators on the built-in datasets: one code path for every algorithm.

Classification reports train/test accuracy, macro F1 and training time and saves a report with the
confusion matrix; regression reports R², RMSE and MAE. The fitted model is saved with skops (a safe
format) as the task's "model" artifact; the report carries feature names, classes and the split seed.

Iterative estimators report learning curves while they train, the intermediate values a sweep's
pruner judges a trial by: gradient boosting trains in rounds with warm_start and reports the test
metrics after each round at step = boosting iterations so far; the MLP trains one epoch per
partial_fit and reports its training loss every epoch and the test metrics every ROUNDS-th of
max_iter, at step = epoch.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

from tensorfleet_agent import task
from tensorfleet_agent.workloads.datasets import CLASSIFICATION, data_sha256, dataset_task, derived, load

TEST_SIZE = 0.2
SPLIT_SEED = 42
ROUNDS = 10  # intermediate reports of an iterative estimator


def _test_metrics(kind: str, y_test: Any, predicted: Any) -> dict[str, float]:
    if kind == CLASSIFICATION:
        accuracy, f1_macro, _ = classification_scores(y_test, predicted)
        return {"test_accuracy": accuracy, "f1_macro": f1_macro}
    r2, rmse, mae = regression_scores(y_test, predicted)
    return {"r2": r2, "rmse": rmse, "mae": mae}


def classification_scores(y_true: Any, y_pred: Any) -> tuple[float, float, Any]:
    """scikit-learn's accuracy_score, f1_score(average="macro") and confusion_matrix, to the last bit, from one
    confusion matrix: the library's own take ~2 ms of input checks on a small test set, most of a small trial's
    time (tests/unit/test_sklearn_scores.py holds them equal)."""
    import numpy as np

    labels, inverse = np.unique(np.concatenate([np.asarray(y_true), np.asarray(y_pred)]), return_inverse=True)
    n, k = len(y_true), len(labels)
    true, pred = inverse[:n], inverse[n:]
    matrix = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    tp, denominator = np.diag(matrix), matrix.sum(axis=1) + matrix.sum(axis=0)
    f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)  # zero_division 0
    return float(np.average(true == pred)), float(np.average(f1)), matrix


def regression_scores(y_true: Any, y_pred: Any) -> tuple[float, float, float]:
    """scikit-learn's r2_score, sqrt(mean_squared_error) and mean_absolute_error, to the last bit (same shapes,
    same order of operations), without its input checks."""
    import numpy as np

    true = np.asarray(y_true, dtype=np.float64).reshape(-1, 1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1, 1)
    residual = ((true - pred) ** 2).sum(axis=0)
    total = ((true - np.average(true, axis=0)) ** 2).sum(axis=0)
    # force_finite: a constant target scores 1 when predicted exactly, else 0
    r2 = float(np.average(1 - residual / total)) if total[0] != 0 else float(residual[0] == 0)
    mse = float(np.average(np.average((true - pred) ** 2, axis=0)))
    mae = float(np.average(np.average(np.abs(pred - true), axis=0)))
    return r2, float(np.sqrt(mse)), mae


def _fit_in_rounds(estimator: Any, x_train: Any, y_train: Any, x_test: Any, kind: str, y_test: Any) -> int:
    """HistGradientBoosting: fit max_iter iterations in ROUNDS warm-started rounds, reporting test metrics after each.

    It counts max_iter in total across warm starts and n_iter_ cumulatively. Stops early when the
    estimator does (its own early stopping). Returns the step of the last report.
    """
    total = int(estimator.max_iter)
    chunk = max(1, math.ceil(total / ROUNDS))
    estimator.set_params(warm_start=True)
    done = 0
    while done < total:
        size = min(chunk, total - done)
        estimator.set_params(max_iter=done + size)
        estimator.fit(x_train, y_train)
        reached = int(estimator.n_iter_)
        task.report(step=reached, **_test_metrics(kind, y_test, estimator.predict(x_test)))
        task.progress(0.1 + 0.7 * reached / total)
        stopped_early = reached < done + size  # its own early stopping
        done = reached
        if stopped_early:
            break
    estimator.set_params(max_iter=total, warm_start=False)  # the saved model shows the parameters asked for
    return done


def _fit_epochs(estimator: Any, x_train: Any, y_train: Any, x_test: Any, kind: str, y_test: Any) -> int:
    """MLP: train one epoch per partial_fit up to max_iter epochs, reporting at step = epoch. Returns the epochs run.

    Not fit() in warm-started rounds: every fit() restarts n_iter_ at 0 (so the rounds' steps never
    advance) and also a fresh optimizer and a fresh shuffle stream. partial_fit keeps the optimizer;
    the seed goes in as one RandomState that the initial weights and every epoch's shuffle draw from,
    as in a single fit() (an int seed would give every partial_fit the same shuffle). It stops where
    fit() would: sklearn counts the epochs whose training loss did not improve on the best by tol,
    and more than n_iter_no_change of them in a row end the training (the adaptive SGD schedule
    lowers its learning rate instead, and resets the count).
    Reports the training loss every epoch, the test metrics every ROUNDS-th of max_iter and at the end.
    """
    import numpy as np
    from sklearn.utils import check_random_state

    total = int(estimator.max_iter)
    if estimator.solver not in ("adam", "sgd") or estimator.early_stopping:
        return _fit_then_report_epochs(estimator, x_train, y_train, x_test, kind, y_test)
    seed = estimator.random_state
    estimator.set_params(random_state=check_random_state(seed))
    classes = {"classes": np.unique(y_train)} if kind == CLASSIFICATION else {}
    chunk = max(1, math.ceil(total / ROUNDS))
    epoch = 0
    converged = False
    while epoch < total and not converged:
        estimator.partial_fit(x_train, y_train, **classes)
        epoch += 1
        converged = estimator._no_improvement_count > estimator.n_iter_no_change
        values = {"loss": float(estimator.loss_)}
        if epoch % chunk == 0 or epoch == total or converged:
            values.update(_test_metrics(kind, y_test, estimator.predict(x_test)))
            task.progress(0.1 + 0.7 * epoch / total)
        task.report(step=epoch, **values)
    estimator.n_iter_ = epoch  # partial_fit counts one per call
    estimator.set_params(random_state=seed)  # the saved model shows the parameters asked for
    if converged:
        print(
            f"note: {type(estimator).__name__} converged after {epoch} epochs: training loss did not improve "
            f"by tol={estimator.tol} for {estimator._no_improvement_count} consecutive epochs"
        )
    else:
        print(f"note: {type(estimator).__name__} used all max_iter={total} epochs without converging")
    return epoch


def _fit_then_report_epochs(estimator: Any, x_train: Any, y_train: Any, x_test: Any, kind: str, y_test: Any) -> int:
    """An MLP that partial_fit cannot train epoch by epoch (lbfgs, or early_stopping on a held-out split).

    One fit(), then its per-epoch curves as sklearn recorded them (loss, and the validation score
    with early stopping) at step = epoch, with the test metrics at the last epoch.
    """
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the note below says so
        estimator.fit(x_train, y_train)
    losses = list(getattr(estimator, "loss_curve_", None) or [])
    scores = list(getattr(estimator, "validation_scores_", None) or [])
    epochs = int(estimator.n_iter_)
    for index, loss in enumerate(losses[:-1]):
        values = {"loss": float(loss)}
        if index < len(scores):
            values["validation_score"] = float(scores[index])
        task.report(step=index + 1, **values)
    last: dict[str, float] = {"loss": float(losses[-1])} if losses else {}
    if scores and len(scores) >= len(losses):
        last["validation_score"] = float(scores[len(losses) - 1])
    task.report(step=epochs, **last, **_test_metrics(kind, y_test, estimator.predict(x_test)))
    if epochs >= int(estimator.max_iter):
        print(f"note: {type(estimator).__name__} used all max_iter={estimator.max_iter} epochs without converging")
    return epochs


def _fit(make: Callable[[str], Any], iterative: Callable[..., int] | None = None) -> None:
    from tensorfleet_agent.workloads.skops_files import skops_io

    spec = task.spec()
    name = str(spec["dataset"])
    kind = dataset_task(name, dict(spec.get("dataset_params") or {}))
    x, y, features, classes = load(name, dict(spec.get("dataset_params") or {}))
    if spec.get("partition") == "cv":
        x_train, x_test, y_train, y_test = _fold(x, y, kind, int(spec["rank"]), int(spec["world_size"]))
        sha256 = data_sha256(x, y)
    else:
        x_train, x_test, y_train, y_test, sha256 = _split(x, y, kind)
    estimator = make(kind)
    header = (
        f"{spec['workload']} ({type(estimator).__name__}) on {name}: {len(x_train)} train / {len(x_test)} test rows, "
        f"{len(features)} features" + (f", {len(classes)} classes" if classes else "")
    )
    rider = "trial" in spec  # a bundled trial: one line, at its end (each line is a record all the way to the store)
    if not rider:
        print(header)
    task.progress(0.1)
    start = time.perf_counter()
    step = 0
    if iterative is not None:
        step = iterative(estimator, x_train, y_train, x_test, kind, y_test)
    else:
        estimator.fit(x_train, y_train)
    training_time = time.perf_counter() - start
    task.progress(0.8)
    predicted = estimator.predict(x_test)
    report: dict[str, Any] = {
        "dataset": name,
        "data_sha256": sha256,  # what a built-in dataset's lineage shows as its sha256
        "task": kind,
        "features": features,
        "classes": classes,
        "split_seed": SPLIT_SEED,
        "test_size": TEST_SIZE,
        "estimator": type(estimator).__name__,
        "versions": task.package_versions(),
    }
    if spec.get("partition") == "cv":
        report.update(fold=int(spec["rank"]), folds=int(spec["world_size"]), test_size=len(x_test) / len(x))
    train_name = "train_accuracy" if kind == CLASSIFICATION else "train_r2"
    fitted = estimator.predict(x_train)  # what estimator.score does (accuracy, R²), without its input checks
    if kind == CLASSIFICATION:
        train_score = classification_scores(y_train, fitted)[0]
        test_accuracy, f1_macro, matrix = classification_scores(y_test, predicted)
        values = {train_name: train_score, "test_accuracy": test_accuracy, "f1_macro": f1_macro}
        report["confusion_matrix"] = matrix.tolist()
    else:
        r2, rmse, mae = regression_scores(y_test, predicted)
        values = {train_name: regression_scores(y_train, fitted)[0], "r2": r2, "rmse": rmse, "mae": mae}
    values["training_time"] = training_time
    task.report(step=step, **values)
    scores = " ".join(f"{k}={v:.4f}" for k, v in values.items())
    print(f"{header}; {scores}" if rider else scores)
    report["metrics"] = values
    if task.keeps_files(values):  # a sweep's trial that can no longer be its best writes no files (skops ~1 ms)
        task.save_artifact_bytes(skops_io().dumps(estimator), "model.skops", kind="model")
        task.save_artifact_bytes(json.dumps(report, indent=1).encode(), "report.json", kind="report")
    task.progress(1.0)


def _split(x: Any, y: Any, kind: str) -> tuple[Any, Any, Any, Any, str]:
    """The seeded train/test split (stratified for classification) and the data's sha256, both kept with the
    arrays datasets.load hands out (datasets.derived, forgotten with them): a sweep's bundled trials split and hash
    their data once, not once each. The parts are read-only too."""

    def make() -> tuple[Any, Any, Any, Any, str]:
        from sklearn.model_selection import train_test_split

        stratify = y if kind == CLASSIFICATION else None
        parts = train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=stratify)
        for array in parts:
            array.setflags(write=False)
        return (*parts, data_sha256(x, y))

    return derived(x, y, f"split:{kind}", make)


def _fold(x: Any, y: Any, kind: str, fold: int, folds: int) -> tuple[Any, Any, Any, Any]:
    """Fold `fold` of a seeded (stratified for classification) k-fold split: the same on every agent."""
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if kind == CLASSIFICATION else KFold)(
        n_splits=folds, shuffle=True, random_state=SPLIT_SEED
    )
    train, test = list(splitter.split(x, y))[fold]
    return x[train], x[test], y[train], y[test]


def random_forest(params: dict[str, Any]) -> None:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    spec = task.spec()
    if spec.get("partition") == "shard":  # this rank grows its share of the trees, with its own seed
        rank, world, total = int(spec["rank"]), int(spec["world_size"]), int(params["n_estimators"])
        params = {
            **params,
            "n_estimators": total // world + (1 if rank < total % world else 0),
            "random_state": int(params["random_state"]) + rank,
        }

    _fit(lambda kind: (RandomForestClassifier if kind == CLASSIFICATION else RandomForestRegressor)(n_jobs=1, **params))


def logistic_regression(params: dict[str, Any]) -> None:
    from sklearn.linear_model import LogisticRegression

    _fit(lambda kind: LogisticRegression(**params))


def svm(params: dict[str, Any]) -> None:
    from sklearn.svm import SVC, SVR

    def make(kind: str) -> Any:
        if kind == CLASSIFICATION:
            return SVC(**params)
        return SVR(**{k: v for k, v in params.items() if k != "random_state"})  # SVR is deterministic

    _fit(make)


def decision_tree(params: dict[str, Any]) -> None:
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    _fit(lambda kind: (DecisionTreeClassifier if kind == CLASSIFICATION else DecisionTreeRegressor)(**params))


def gradient_boosting(params: dict[str, Any]) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier
    _fit(lambda kind: (cls if kind == CLASSIFICATION else HistGradientBoostingRegressor)(**params), _fit_in_rounds)


def knn(params: dict[str, Any]) -> None:
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    _fit(lambda kind: (KNeighborsClassifier if kind == CLASSIFICATION else KNeighborsRegressor)(n_jobs=1, **params))


def mlp(params: dict[str, Any]) -> None:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    options = {**params, "hidden_layer_sizes": tuple(int(w) for w in str(params["hidden_layer_sizes"]).split(","))}
    _fit(lambda kind: (MLPClassifier if kind == CLASSIFICATION else MLPRegressor)(**options), _fit_epochs)
