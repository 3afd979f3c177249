"""Model performance against ground truth: accuracy, precision, recall and AUC; regression's MAE and RMSE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.domain.columns import as_float


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy, precision and recall; binary on the positive class, else macro-averaged over the labels of
    both arrays (a class never predicted has precision 0). `auc_from` says what the AUC was computed from:
    "scores", "predictions" (0/1 hard predictions: the balanced accuracy) or None (no AUC)."""

    rows: int
    average: str  # "binary" or "macro"
    positive: Any  # the positive class when binary
    accuracy: float
    precision: float
    recall: float
    auc: float | None
    auc_from: str | None


@dataclass(frozen=True)
class RegressionMetrics:
    rows: int
    mae: float
    rmse: float


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (tied scores count half); None without both classes."""
    positive = np.asarray(is_positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy import stats  # type: ignore[import-untyped]  # 1.5 s to import: only when it is asked for

    ranks = stats.rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, *, scores: np.ndarray | None = None
) -> ClassificationMetrics:
    """Classification performance once labels arrive.

    Binary when the two arrays hold at most two labels together: the positive class is 1 if present, else
    the larger label; `scores` are the positive class's scores (1-D) or one column per sorted label (2-D).
    Multi-class: macro precision and recall, and the macro one-vs-rest AUC when `scores` has one column per
    sorted label. Without scores, a binary AUC is computed from the hard predictions.
    """
    truth, predicted = np.asarray(y_true), np.asarray(y_pred)
    if truth.shape != predicted.shape or truth.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D arrays of the same length")
    if truth.size == 0:
        raise ValueError("no labelled rows")
    labels = np.unique(np.concatenate([truth, predicted]))  # sorted
    score_array = np.asarray(scores, dtype=np.float64) if scores is not None else None
    if labels.size <= 2:
        return _binary_metrics(truth, predicted, labels, score_array)
    return _macro_metrics(truth, predicted, labels, score_array)


def _binary_metrics(
    truth: np.ndarray, predicted: np.ndarray, labels: np.ndarray, scores: np.ndarray | None
) -> ClassificationMetrics:
    """Binary metrics on the positive class: 1 if present, else the larger label."""
    positive = 1 if np.any(labels == 1) else labels[-1]
    actual, guessed = truth == positive, predicted == positive
    tp = int(np.sum(actual & guessed))
    if scores is not None:
        if scores.ndim == 2:
            scores = scores[:, int(np.searchsorted(labels, positive))]
        auc, auc_from = binary_auc(actual, scores), "scores"
    else:
        auc, auc_from = binary_auc(actual, guessed.astype(np.float64)), "predictions"
    return ClassificationMetrics(
        rows=int(truth.size),
        average="binary",
        positive=positive.item() if isinstance(positive, np.generic) else positive,
        accuracy=float(np.mean(truth == predicted)),
        precision=_ratio(tp, int(guessed.sum())),
        recall=_ratio(tp, int(actual.sum())),
        auc=auc,
        auc_from=auc_from if auc is not None else None,
    )


def _macro_metrics(
    truth: np.ndarray, predicted: np.ndarray, labels: np.ndarray, scores: np.ndarray | None
) -> ClassificationMetrics:
    """Multi-class metrics, macro-averaged over the labels; the one-vs-rest AUC from one score column per label."""
    precisions, recalls = [], []
    for label in labels:
        actual, guessed = truth == label, predicted == label
        tp = int(np.sum(actual & guessed))
        precisions.append(_ratio(tp, int(guessed.sum())))
        recalls.append(_ratio(tp, int(actual.sum())))
    auc = None
    if scores is not None:
        if scores.ndim != 2 or scores.shape[1] != labels.size:
            raise ValueError(f"multi-class scores need one column per label ({labels.size})")
        per_class = [binary_auc(truth == label, scores[:, i]) for i, label in enumerate(labels)]
        known = [a for a in per_class if a is not None]
        auc = float(np.mean(known)) if known else None
    return ClassificationMetrics(
        rows=int(truth.size),
        average="macro",
        positive=None,
        accuracy=float(np.mean(truth == predicted)),
        precision=float(np.mean(precisions)),
        recall=float(np.mean(recalls)),
        auc=auc,
        auc_from="scores" if auc is not None else None,
    )


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> RegressionMetrics:
    """Mean absolute error and root mean squared error."""
    truth, predicted = as_float(y_true), as_float(y_pred)
    if truth.shape != predicted.shape or truth.size == 0:
        raise ValueError("y_true and y_pred must be non-empty arrays of the same length")
    errors = predicted - truth
    return RegressionMetrics(
        rows=int(truth.size),
        mae=float(np.mean(np.abs(errors))),
        rmse=float(np.sqrt(np.mean(errors * errors))),
    )
