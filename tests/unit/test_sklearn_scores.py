"""The built-in workloads' scores are scikit-learn's to the last bit, computed without its input checks (a small
trial's fit takes ~0.4 ms; the library's metric functions took ~2 ms more)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics

from tensorfleet_agent.workloads.sklearn_basic import classification_scores, regression_scores


def test_classification_scores_equal_scikit_learns() -> None:
    rng = np.random.default_rng(7)
    for case in range(600):
        k, n = int(rng.integers(2, 8)), int(rng.integers(1, 60))
        y_true = rng.integers(0, k, n)
        y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, k, n))
        if case % 3 == 0:  # string labels, as a dataset's class names
            y_true, y_pred = np.array([f"c{v}" for v in y_true]), np.array([f"c{v}" for v in y_pred])
        accuracy, f1_macro, matrix = classification_scores(y_true, y_pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a label never predicted: sklearn warns and scores it 0, as we do
            assert accuracy == metrics.accuracy_score(y_true, y_pred)
            assert f1_macro == metrics.f1_score(y_true, y_pred, average="macro")
            assert matrix.tolist() == metrics.confusion_matrix(y_true, y_pred).tolist()


def test_regression_scores_equal_scikit_learns() -> None:
    rng = np.random.default_rng(8)
    for case in range(600):
        n = int(rng.integers(2, 200))
        y_true = rng.normal(size=n) * rng.random() * 100
        if case % 20 == 0:
            y_true = np.full(n, 3.0)  # a constant target: R² is 1 if predicted exactly, else 0
        y_pred = y_true + (rng.normal(size=n) if case % 40 else 0.0)
        r2, rmse, mae = regression_scores(y_true, y_pred)
        assert r2 == metrics.r2_score(y_true, y_pred)
        assert rmse == float(np.sqrt(metrics.mean_squared_error(y_true, y_pred)))
        assert mae == metrics.mean_absolute_error(y_true, y_pred)
