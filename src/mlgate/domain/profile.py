"""Baseline profiles: what a model's training data, label and predictions looked like at registration.

A column's profile holds its type, count, null rate, range, standard deviation and a histogram: for a
numeric column, 10 quantile bins (edges and counts; tied edges merge, and a column with at most 10
distinct values gets one bin per value); for a categorical one, the counts of its most common values. Drift checks
compare later traffic against these bins. Pure: numpy only, values come in as arrays.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

PROFILE_FORMAT = 1
BINS = 10
SAMPLE_ROWS = 10_000
SAMPLE_SEED = 0
TOP_CATEGORIES = 20
OTHER = "(other)"


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    return float(value) if math.isfinite(value) else None


def is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def quantile_bins(values: np.ndarray, bins: int = BINS) -> tuple[list[float], list[int]]:
    """Bin edges and the count in each bin: at the quantiles 0, 1/bins, ..., 1 (tied edges merged), or,
    for a column with at most `bins` distinct values (a 0/1 label), one bin per value, split halfway.

    Bins are closed on the left, the last one on both sides (numpy's histogram), so every value
    counts once.
    """
    if values.size == 0:
        return [], []
    distinct = np.unique(values)
    if distinct.size == 1:  # one value: one bin that holds everything
        return [float(distinct[0]), float(distinct[0])], [int(values.size)]
    if distinct.size <= bins:
        edges = np.concatenate([distinct[:1], (distinct[:-1] + distinct[1:]) / 2, distinct[-1:]])
    else:
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    counts, _ = np.histogram(values, bins=edges)
    return [float(e) for e in edges], [int(c) for c in counts]


def _numeric(values: np.ndarray) -> dict[str, Any]:
    as_float = values.astype("float64")
    present = as_float[np.isfinite(as_float)]  # infinities count as missing: they have no bin
    edges, counts = quantile_bins(present)
    some = present.size > 0
    return {
        "type": "numeric",
        "present": int(present.size),
        "min": _finite(float(present.min())) if some else None,
        "max": _finite(float(present.max())) if some else None,
        "mean": _finite(float(present.mean())) if some else None,
        "std": _finite(float(present.std(ddof=1))) if present.size > 1 else (0.0 if some else None),
        "bins": {"edges": edges, "counts": counts},
    }


def _categorical(values: np.ndarray) -> dict[str, Any]:
    present = [str(v) for v in values.tolist() if not _is_null(v)]
    counted = Counter(present).most_common()
    top = counted[:TOP_CATEGORIES]
    categories = [name for name, _ in top]
    counts = [count for _, count in top]
    rest = sum(count for _, count in counted[TOP_CATEGORIES:])
    if rest:
        categories.append(OTHER)
        counts.append(rest)
    return {
        "type": "categorical",
        "present": len(present),
        "distinct": len(counted),
        "min": min(present) if present else None,
        "max": max(present) if present else None,
        "std": None,
        "bins": {"categories": categories, "counts": counts},
    }


def column_profile(name: str, values: np.ndarray) -> dict[str, Any]:
    """One column's profile; numeric columns may hold NaN, others None or NaN, for missing values."""
    count = int(values.size)
    stats = _numeric(values) if is_numeric(values) else _categorical(values)
    nulls = count - int(stats.pop("present"))
    return {"name": name, "count": count, "nulls": nulls, "null_rate": nulls / count if count else 0.0, **stats}


def sample_indices(rows: int, *, limit: int = SAMPLE_ROWS, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Row positions of a seeded sample of up to `limit` rows, in their original order."""
    if rows <= limit:
        return np.arange(rows)
    chosen = np.random.default_rng(seed).choice(rows, size=limit, replace=False)
    return np.sort(chosen)


def build_profile(
    *,
    data: str,
    rows: int,
    features: dict[str, np.ndarray],
    label: tuple[str, np.ndarray] | None,
    predictions: dict[str, np.ndarray] | None,
    sample: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    """The baseline profile: features and label over all the training rows, predictions over the sample."""
    return {
        "format": PROFILE_FORMAT,
        "data": data,
        "rows": rows,
        "bins": BINS,
        "features": [column_profile(name, values) for name, values in features.items()],
        "label": column_profile(*label) if label is not None else None,
        "predictions": (
            [column_profile(name, values) for name, values in predictions.items()] if predictions is not None else None
        ),
        "sample": sample,
        "notes": notes,
    }
