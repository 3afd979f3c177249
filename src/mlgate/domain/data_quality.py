"""Data quality of a window: per column, the nulls, type errors and values outside the training range.

Counted against the column's profile (`mlgate.domain.profile`), on typed arrays and on object arrays of
the values as they arrived in requests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
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


def quality_basis(reference_profile: Mapping[str, Any]) -> str:
    """What data quality reads of a baseline (each feature's name, kind, range and categories), as one
    fingerprint: counts made against one baseline hold for every baseline with the same fingerprint."""
    basis = [
        [column.get("name"), column.get("type"), column.get("min"), column.get("max"), column.get("bins")]
        for column in reference_profile.get("features") or []
    ]
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def counts(quality: ColumnQuality) -> dict[str, int | None]:
    return {
        "rows": quality.rows,
        "nulls": quality.nulls,
        "type_errors": quality.type_errors,
        "out_of_range": quality.out_of_range,
    }


def merged_report(
    reference_profile: Mapping[str, Any], pieces: Sequence[tuple[int, Mapping[str, Mapping[str, int | None]]]]
) -> list[ColumnQuality]:
    """The quality report of a window made of pieces (rows, counts per feature), as `quality_report` gives it
    for their rows together: a feature some piece lacks counts as null in that piece's rows, as it reads
    from the pieces' unified columns."""
    present = {name for _, piece in pieces for name in piece}
    report = []
    for column in reference_profile.get("features") or []:
        name = str(column["name"])
        if name not in present:
            continue
        ranged = data_quality(column, np.empty(0)).out_of_range is not None
        total = {"rows": 0, "nulls": 0, "type_errors": 0, "out_of_range": 0}
        for rows, piece in pieces:
            found = piece.get(name) or {"rows": rows, "nulls": rows, "type_errors": 0, "out_of_range": 0}
            for key in total:
                total[key] += int(found.get(key) or 0)
        report.append(_quality(column, total, ranged=ranged))
    return report


def _quality(column: Mapping[str, Any], total: Mapping[str, int], *, ranged: bool) -> ColumnQuality:
    rows = total["rows"]
    out = total["out_of_range"] if ranged else None
    return ColumnQuality(
        name=str(column["name"]),
        kind=NUMERIC if column.get("type") == NUMERIC else CATEGORICAL,
        rows=rows,
        nulls=total["nulls"],
        type_errors=total["type_errors"],
        out_of_range=out,
        null_rate=_rate(total["nulls"], rows),
        type_error_rate=_rate(total["type_errors"], rows),
        out_of_range_rate=_rate(out, rows) if out is not None else None,
    )
