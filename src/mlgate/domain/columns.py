"""Column values as the monitoring maths reads them: the two column kinds, missing values, numbers, floats.

A column arrives as a typed numpy array (from the monitoring store's files) or as an object array of the
values as they came in requests (None, strings, containers mixed with numbers); these helpers read both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NUMERIC = "numeric"
CATEGORICAL = "categorical"

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


def is_null(value: Any) -> bool:
    """None or NaN: a missing value."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def is_number(value: Any) -> bool:
    """An int or float (numpy's too), not a boolean."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def as_float(values: np.ndarray) -> FloatArray:
    """A column as float64, NaN where a value is missing or not a number (None, strings in an object array)."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        return array.astype(np.float64, copy=False)
    return np.array([float(v) if is_number(v) else math.nan for v in array.tolist()], dtype=np.float64)


def sorted_finite(values: np.ndarray) -> FloatArray:
    """The finite values of a column, sorted, in a new array (one copy: filtered or copied, then sorted in place)."""
    array = as_float(values)
    finite = np.isfinite(array)
    kept = array.copy() if finite.all() else array[finite]
    kept.sort()
    return kept
