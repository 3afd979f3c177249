"""The linear fast path gives exactly the estimator's own predictions, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.tree import DecisionTreeClassifier

from mlgate.serving.linear import linear_predict


def _data(classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)) * [1, 10, 100, 0.1, 3]
    y = np.digitize(x[:, 0] + x[:, 2] / 100, np.linspace(-1, 1, classes - 1))
    return x, y


@pytest.mark.parametrize("classes", [2, 4])
def test_classifiers_answer_as_predict_does_with_their_own_labels(classes: int) -> None:
    x, y = _data(classes)
    labels = np.array(["low", "mid", "high", "top"])[:classes][y]
    model = LogisticRegression(max_iter=2000).fit(x, labels)
    fast = linear_predict(model, x[:3])
    assert fast is not None
    rows = np.random.default_rng(5).normal(size=(1000, 5)) * 50
    np.testing.assert_array_equal(fast(rows), model.predict(rows))
    np.testing.assert_array_equal(fast(x[:1].astype(np.int64)), model.predict(x[:1].astype(np.int64)))


@pytest.mark.parametrize("estimator", [LinearRegression(), Ridge(alpha=2.0)])
def test_regressors_answer_as_predict_does(estimator: object) -> None:
    x, _ = _data()
    model = estimator.fit(x, x @ [1, 2, 3, 4, 5] + 7)  # type: ignore[attr-defined]
    fast = linear_predict(model, x[:3])
    assert fast is not None
    np.testing.assert_allclose(fast(x), model.predict(x), rtol=1e-12)


def test_other_estimators_and_look_alikes_keep_their_own_predict() -> None:
    x, y = _data()
    assert linear_predict(DecisionTreeClassifier().fit(x, y), x[:3]) is None

    class LogisticRegressionLookAlike(LogisticRegression):
        def predict(self, X: np.ndarray) -> np.ndarray:
            return np.zeros(len(X), dtype=int)  # not what the coefficients say

    LogisticRegressionLookAlike.__name__ = "LogisticRegression"
    LogisticRegressionLookAlike.__module__ = "sklearn.linear_model"
    model = LogisticRegressionLookAlike(max_iter=2000).fit(x, y)
    assert linear_predict(model, x[:3]) is None  # checked against predict at load: different, so not used
