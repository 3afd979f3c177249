"""Model-validation maths: a metric of predictions against held-out labels, and the check's verdict.

Pure numpy, so that the control plane computes the figures and the verdict itself from predictions
the sandbox returned (the model never sees the labels nor writes its own result). Classification
metrics take scores (a positive-class probability or a 0/1 prediction) and threshold them at 0.5, as
scikit-learn's would on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "f1": True, "r2": True, "rmse": False}
THRESHOLD = 0.5


class MetricError(ValueError):
    """The metric cannot be computed on these values; the message says why."""


def _as_float(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MetricError(f"the {what} are not numbers") from None
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise MetricError(f"{bad} of the {len(array)} {what} are missing or infinite")
    return array


def _binary(truth: np.ndarray) -> np.ndarray:
    """The labels as booleans, positive = the larger of two classes (1 for 0/1 labels)."""
    classes = np.unique(truth)
    if len(classes) != 2 and not (len(classes) == 1 and classes[0] in (0.0, 1.0)):
        raise MetricError(f"a binary metric needs two label classes; the labels have {len(classes)}")
    positive = classes[-1] if len(classes) == 2 else 1.0
    return np.asarray(truth == positive)


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # the mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    positive = _binary(truth)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricError("roc_auc needs both classes among the held-out labels")
    ranks = _ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metric_value(metric: str, truth: Any, answers: Any) -> float:
    """`metric` of the answers (one per row) against the labels; MetricError when it is undefined."""
    if metric not in HIGHER_IS_BETTER:
        raise MetricError(f"unknown metric '{metric}'; known: {', '.join(sorted(HIGHER_IS_BETTER))}")
    labels, scores = _as_float(truth, "labels"), _as_float(answers, "predictions")
    if len(labels) != len(scores) or not len(labels):
        raise MetricError(f"{len(scores)} predictions for {len(labels)} labels")
    if metric == "roc_auc":
        return roc_auc(labels, scores)
    if metric in ("accuracy", "f1"):
        guessed = scores >= THRESHOLD
        if metric == "accuracy":
            return float(np.mean(labels == guessed.astype(np.float64)))
        actual = _binary(labels)
        tp = int((guessed & actual).sum())
        wrong = int((guessed != actual).sum())
        return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0
    if metric == "r2":
        residual = float(((labels - scores) ** 2).sum())
        total = float(((labels - labels.mean()) ** 2).sum())
        if total == 0.0:
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / total
    return math.sqrt(float(np.mean((labels - scores) ** 2)))


@dataclass(frozen=True)
class Verdict:
    """The check's result: `passed` or `failed`, a one-line summary, and the figures behind it."""

    status: str
    summary: str
    figures: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def verdict(
    metric: str,
    value: float,
    *,
    rows: int,
    floor: float | None,
    champion: tuple[str, float] | None,
    max_regression: float | None,
) -> Verdict:
    """Judge the candidate's `value`: against the floor (`min`) and against the champion's (name, value)
    on the same rows, allowed to regress by at most `max_regression`."""
    higher = HIGHER_IS_BETTER[metric]
    figures: dict[str, Any] = {"metric": metric, "value": value, "rows": rows, "higher_is_better": higher}
    problems, notes = [], [f"{metric} {value:.4f} on {rows} held-out rows"]
    if floor is not None:
        figures["min"] = floor
        if value < floor if higher else value > floor:
            problems.append(f"{metric} {value:.4f} is {'below' if higher else 'above'} the bar {floor:g}")
    if champion is None:
        notes.append("no production champion to compare with")
    else:
        name, theirs = champion
        regression = (theirs - value) if higher else (value - theirs)
        figures |= {"champion": name, "champion_value": theirs, "regression": regression}
        notes.append(f"champion {name} {theirs:.4f} on the same rows")
        if max_regression is not None:
            figures["max_regression"] = max_regression
            if regression > max_regression:
                problems.append(
                    f"{metric} regresses by {regression:.4f} against the champion {name} "
                    f"(at most {max_regression:g} allowed)"
                )
    status = "failed" if problems else "passed"
    return Verdict(
        status=status, summary="; ".join(problems or notes), figures=figures | {"status": status}, notes=notes
    )
