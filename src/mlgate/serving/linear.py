"""A linear model's prediction as one matrix product, for the estimators whose `predict` is exactly that.

scikit-learn spends about 100 µs per `predict` call validating its input, whatever the number of rows;
for a linear model the arithmetic itself is a few microseconds. For the estimator types listed here the
host computes `X @ coef_.T + intercept_` (and, for classifiers, picks `classes_` as `predict` does) from
the estimator's own fitted arrays. The result is compared with the estimator's own `predict` at load on
the warm-up rows and on rows spread around them; any difference, and the estimator's `predict` is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
CLASSIFIERS = {"LogisticRegression", "RidgeClassifier", "SGDClassifier", "LinearSVC", "Perceptron"}
REGRESSORS = {"LinearRegression", "Ridge", "Lasso", "ElasticNet", "SGDRegressor", "LinearSVR"}
PROBE_ROWS = 256


def _classifier(model: Any) -> Predict | None:
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    classes = np.asarray(model.classes_)
    if coef.ndim != 2 or len(classes) < 2:
        return None
    if coef.shape[0] == 1:  # binary: the positive class when the score is above 0
        weights, bias = coef[0].copy(), float(intercept[0])

        def binary(x: np.ndarray) -> np.ndarray:
            labels: np.ndarray = classes[(x.astype(np.float64, copy=False) @ weights + bias > 0).astype(np.intp)]
            return labels

        return binary
    weights_t = coef.T.copy()

    def multiclass(x: np.ndarray) -> np.ndarray:
        labels: np.ndarray = classes[np.argmax(x.astype(np.float64, copy=False) @ weights_t + intercept, axis=1)]
        return labels

    return multiclass


def _regressor(model: Any) -> Predict | None:
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef.ndim != 1:  # several targets: leave them to the estimator
        return None
    bias = float(intercept) if intercept.ndim == 0 else float(intercept.ravel()[0])

    def regress(x: np.ndarray) -> np.ndarray:
        result: np.ndarray = x.astype(np.float64, copy=False) @ coef + bias
        return result

    return regress


def linear_predict(model: Any, example: np.ndarray) -> Predict | None:
    """The matrix-product predict of a plain linear estimator, if it gives exactly the estimator's answers."""
    kind = type(model).__name__
    if type(model).__module__.split(".")[0] != "sklearn" or kind not in CLASSIFIERS | REGRESSORS:
        return None
    try:
        fast = _classifier(model) if kind in CLASSIFIERS else _regressor(model)
        if fast is None or example.dtype == object:
            return None
        base = example.astype(np.float64)
        rng = np.random.default_rng(0)
        spread = np.abs(base).mean(axis=0) + 1.0
        probe = np.vstack(
            [base, base[rng.integers(0, len(base), PROBE_ROWS)] + rng.normal(size=(PROBE_ROWS, base.shape[1])) * spread]
        )
        expected = np.asarray(model.predict(probe))
        got = fast(probe)
    except Exception:  # an estimator whose arrays are not what this module expects
        return None
    if kind in CLASSIFIERS:
        return fast if np.array_equal(got, expected) else None
    return fast if np.allclose(got, expected, rtol=1e-12, atol=1e-12) else None
