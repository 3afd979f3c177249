"""Data quality of a window: per column, the nulls, type errors and values outside the training range.

Counted against the column's profile (`mlgate.domain.profile`), on typed arrays and on object arrays of
the values as they arrived in requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.domain.columns import CATEGORICAL, NUMERIC, is_null, is_number
from mlgate.domain.profile import OTHER


@dataclass(frozen=True)
class ColumnQuality:
    """Counts and rates over all the column's current rows.

    Type errors: in a numeric column, values that are not numbers (strings, booleans, containers); in a
    categorical one, values that are not scalars (lists, dicts, bytes). Out of range: a numeric value
    below the training minimum or above the maximum (infinities included); a categorical value outside the
    training categories, only when the profile lists them all (else None, as when the profile has no range).
    """

    name: str
    kind: str
    rows: int
    nulls: int
    type_errors: int
    out_of_range: int | None
    null_rate: float
    type_error_rate: float
    out_of_range_rate: float | None


def _rate(count: int, rows: int) -> float:
    return count / rows if rows else 0.0


def data_quality(column: Mapping[str, Any], values: np.ndarray) -> ColumnQuality:
    """Null, type-error and out-of-range counts of one column against its profile (`column`); accepts
    typed arrays and object arrays (values as they arrived in requests)."""
    name = str(column["name"])
    kind = NUMERIC if column.get("type") == NUMERIC else CATEGORICAL
    array = np.asarray(values)
    rows = int(array.shape[0])
    out: int | None
    if kind == NUMERIC:
        if array.dtype.kind in "iuf":
            numbers = array.astype(np.float64, copy=False)
            nulls, type_errors = int(np.isnan(numbers).sum()), 0
        else:
            items = array.tolist()
            null_mask = [is_null(v) for v in items]
            number_mask = [is_number(v) and not n for v, n in zip(items, null_mask, strict=True)]
            nulls = sum(null_mask)
            type_errors = rows - nulls - sum(number_mask)
            numbers = np.array([float(v) for v, ok in zip(items, number_mask, strict=True) if ok], dtype=np.float64)
        low, high = column.get("min"), column.get("max")
        if low is None or high is None:
            out = None
        else:
            # NaN is neither below nor above: nulls are not counted out of range
            out = int(np.count_nonzero(numbers < float(low)) + np.count_nonzero(numbers > float(high)))
    else:
        items = array.tolist()
        nulls = sum(1 for v in items if is_null(v))
        scalar = (str, bool, int, float, np.generic)
        type_errors = sum(1 for v in items if not is_null(v) and not isinstance(v, scalar))
        categories = (column.get("bins") or {}).get("categories") or []
        if categories and OTHER not in categories:
            known = {str(c) for c in categories}
            out = sum(1 for v in items if not is_null(v) and isinstance(v, scalar) and str(v) not in known)
        else:
            out = None
    return ColumnQuality(
        name=name,
        kind=kind,
        rows=rows,
        nulls=nulls,
        type_errors=type_errors,
        out_of_range=out,
        null_rate=_rate(nulls, rows),
        type_error_rate=_rate(type_errors, rows),
        out_of_range_rate=_rate(out, rows) if out is not None else None,
    )


def quality_report(reference_profile: Mapping[str, Any], current: Mapping[str, np.ndarray]) -> list[ColumnQuality]:
    """Data quality of every profiled feature present in the current window."""
    return [
        data_quality(column, current[str(column["name"])])
        for column in reference_profile.get("features") or []
        if str(column["name"]) in current
    ]
