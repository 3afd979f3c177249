"""Monitoring signals: drift, data quality, model and endpoint performance, computed from arrays.

Pure functions over numpy arrays (scipy only for the chi-squared and Kolmogorov-Smirnov distributions and
for ranks); no I/O, no pandas. The baseline is what a model was registered with (`mlgate.domain.profile`):
each column's profile (type, range, histogram bins) and the reference sample of up to 10,000 training rows.

Drift of a numeric column compares the current window with the reference on the profile's bins (PSI,
Jensen-Shannon distance) and with the reference sample itself (Wasserstein distance, Kolmogorov-Smirnov).
Each current column is sorted once; its bin counts are `searchsorted` of the bin edges, and the KS
statistic and Wasserstein distance come from `searchsorted` of the reference's values in it and one
summing pass, so 1,000,000 rows cost one sort and one linear pass. A categorical column is compared on the profile's
category counts (chi-squared, Jensen-Shannon distance).

The defaults follow Evidently's for large data: a numeric column drifts when the Wasserstein distance,
in reference standard deviations, reaches 0.1; a categorical one when the Jensen-Shannon distance
reaches 0.1; the dataset drifts when at least half its judged columns do. PSI and the KS p-value are
reported for information only (at a million rows any difference has a p-value of about zero).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from mlgate.domain.profile import OTHER, quantile_bins

NUMERIC = "numeric"
CATEGORICAL = "categorical"

# Default thresholds. The primary measure of each kind decides "drifted"; the others are information.
WASSERSTEIN_THRESHOLD = 0.1  # normalized Wasserstein distance, numeric columns
JENSEN_SHANNON_THRESHOLD = 0.1  # Jensen-Shannon distance (base 2), categorical columns
PSI_THRESHOLD = 0.2  # information: the usual "significant shift" line
KS_PVALUE_THRESHOLD = 0.05  # information
DATASET_DRIFT_SHARE = 0.5  # the dataset drifts when this share of its judged columns drifts
MIN_ROWS = 100  # below this many current rows, no verdict

# An empty bin's share in PSI, as Evidently does: ln(0) has no value, and a tiny share keeps one empty
# bin from dominating the sum.
PSI_EPSILON = 1e-4
# The least standard deviation the Wasserstein distance is divided by (Evidently's floor too), so a
# constant reference column still gives a finite, comparable value: 0 when nothing moved.
STD_FLOOR = 1e-3

OK = "ok"
NOT_ENOUGH_ROWS = "not enough rows"
MISSING = "missing"
NO_REFERENCE = "no reference"
NO_COLUMNS = "no columns judged"

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True)
class Thresholds:
    """The lines a measure must reach to call a column drifted, and the share of drifted columns for the dataset."""

    wasserstein: float = WASSERSTEIN_THRESHOLD
    jensen_shannon: float = JENSEN_SHANNON_THRESHOLD
    psi: float = PSI_THRESHOLD
    ks_pvalue: float = KS_PVALUE_THRESHOLD
    dataset_share: float = DATASET_DRIFT_SHARE


DEFAULT_THRESHOLDS = Thresholds()


# ---------------------------------------------------------------------------------------------------------
# Values


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def as_float(values: np.ndarray) -> FloatArray:
    """A column as float64, NaN where a value is missing or not a number (None, strings in an object array)."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        return array.astype(np.float64, copy=False)
    return np.array([float(v) if _is_number(v) else math.nan for v in array.tolist()], dtype=np.float64)


def sorted_finite(values: np.ndarray) -> FloatArray:
    """The finite values of a column, sorted, in a new array (one copy: filtered or copied, then sorted in place)."""
    array = as_float(values)
    finite = np.isfinite(array)
    kept = array.copy() if finite.all() else array[finite]
    kept.sort()
    return kept


# ---------------------------------------------------------------------------------------------------------
# Distances between distributions


def _shares(counts: np.ndarray) -> FloatArray:
    total = float(np.sum(counts))
    if total <= 0:
        raise ValueError("a distribution needs at least one counted value")
    return np.asarray(counts, dtype=np.float64) / total


def psi(reference_counts: np.ndarray, current_counts: np.ndarray, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index over the same bins: sum of (current - reference) * ln(current / reference)
    over the bins' shares, an empty bin's share taken as `epsilon`."""
    reference = _shares(reference_counts)
    current = _shares(current_counts)
    reference = np.where(reference == 0, epsilon, reference)
    current = np.where(current == 0, epsilon, current)
    return float(np.sum((current - reference) * np.log(current / reference)))


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance over the same bins: the square root of the JS divergence in base 2, in [0, 1]."""
    p = _shares(reference_counts)
    q = _shares(current_counts)
    m = (p + q) / 2

    def kl(a: FloatArray) -> float:
        held = a > 0  # 0 * log 0 = 0; m > 0 wherever a > 0
        return float(np.sum(a[held] * np.log2(a[held] / m[held])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks_and_wasserstein(reference: FloatArray, current: FloatArray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and Wasserstein-1 distance between two *sorted*, finite,
    non-empty arrays, without sorting or merging them: `searchsorted` of the reference's distinct values
    (and of one crossing point per gap between them) in the current array, and one `np.add.reduceat` pass
    over it. Same values as `scipy.stats.ks_2samp` and `scipy.stats.wasserstein_distance`.

    Both empirical CDFs are right-continuous steps. Between two distinct reference values u_k < u_k+1 the
    reference CDF is a constant a_k, and the current CDF F rises through it once, at the current value of
    rank ceil(a_k * m), x*_k. So |a_k - F| is a_k - F on [u_k, x*_k) and F - a_k on [x*_k, u_k+1), and each
    piece integrates from the count of current values at its start and the sum of those inside it. KS is
    the largest gap at the reference values and just before them, where the steps are.
    """
    n, m = reference.size, current.size
    if n == 0 or m == 0:
        raise ValueError("KS and Wasserstein need values on both sides")
    last_of_ties = np.append(reference[1:] != reference[:-1], True)
    distinct = reference[last_of_ties]
    seen = np.flatnonzero(last_of_ties) + 1  # reference values <= each distinct value
    at = np.searchsorted(current, distinct, side="right")  # current values <= it
    before = np.searchsorted(current, distinct, side="left")  # current values < it
    f_reference = seen / n
    ks = max(
        float(before[0] / m),  # below the first reference value the reference CDF is 0
        float(np.max(np.abs(f_reference - at / m))),
        float(np.max(np.abs(f_reference[:-1] - before[1:] / m))) if distinct.size > 1 else 0.0,
    )

    level = seen[:-1] * (m / n)  # a_k * m: the current count at which F reaches a_k
    rank = -((-seen[:-1] * m) // n)  # ceil(a_k * m), exact in integers: 1..m-1
    crossing = np.clip(current[rank - 1], distinct[:-1], distinct[1:])
    cuts = np.empty(2 * distinct.size - 1)
    cuts[0::2], cuts[1::2] = distinct, crossing
    upto = np.searchsorted(current, cuts, side="right")  # current values <= each cut
    starts = np.concatenate(([0], upto))  # segments of current: (-inf, cut_0], (cut_0, cut_1], ..., (cut_last, inf)
    counts = np.diff(np.append(starts, m))
    sums = np.zeros(starts.size)
    within = starts < m  # segments starting at m are empty; the last one before them runs to the end
    sums[within] = np.add.reduceat(current, starts[within])
    sums[counts == 0] = 0.0  # reduceat gives the element itself for an empty segment
    # Below the first reference value: the current CDF itself; above the last: 1 minus it.
    outside = (counts[0] * cuts[0] - sums[0]) + (sums[-1] - counts[-1] * cuts[-1])
    # Piece i runs from cut i to cut i+1; the current values inside it are segment i+1.
    widths = np.diff(cuts)
    inside = counts[1:-1] * cuts[1:] - sums[1:-1]  # sum of (end - value) over the values inside
    levels = np.repeat(level, 2)
    sign = np.tile([-1.0, 1.0], distinct.size - 1)  # below the crossing a_k - F, above it F - a_k
    pieces = sign * (widths * (upto[:-1] - levels) + inside)
    wasserstein = float((outside + np.sum(pieces)) / m)
    return ks, wasserstein


# Below this, a KS p-value is Kolmogorov's limit distribution's: cheap, and close enough so far from any
# threshold (scipy's finite-n distribution takes some 30 ms per call there at n = 10,000).
KS_TINY_PVALUE = 1e-6


def ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Two-sided KS p-value by Smirnov's asymptotic distribution, as `ks_2samp(method="asymp")` (what
    scipy's "auto" picks once a sample passes 10,000 rows); where Kolmogorov's limit distribution puts it
    below KS_TINY_PVALUE, that value."""
    effective = max(1, round(n * m / (n + m)))  # 1 and 1 value would round to 0
    limit = float(stats.kstwobign.sf(math.sqrt(effective) * statistic))
    if limit < KS_TINY_PVALUE:
        return limit
    return float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))


# ---------------------------------------------------------------------------------------------------------
# Numeric drift


@dataclass(frozen=True, eq=False)
class Reference:
    """One numeric column's reference, built once: the sorted sample, its standard deviation, and the bins.

    `cuts` are the bins' inner edges: the outer bins run to -inf and +inf, so current values outside the
    training range still count (in the first or last bin). Bins are closed on the left, as the profile's.
    """

    values: FloatArray  # the reference sample, finite values, sorted
    std: float  # population standard deviation (ddof 0) of the sample
    cuts: FloatArray
    counts: IntArray  # reference count per bin: len(cuts) + 1 bins

    @classmethod
    def build(cls, sample: np.ndarray, bins: Mapping[str, Sequence[float]] | None = None) -> Reference:
        """From the reference sample and, if given and not empty, the profile's bins ({"edges", "counts"});
        otherwise the bins are the sample's quantile bins, computed as the profile computes them."""
        values = sorted_finite(sample)
        if values.size == 0:
            raise ValueError("the reference sample has no finite values")
        edges_list: Sequence[float] = bins.get("edges", []) if bins else []
        counts_list: Sequence[float] = bins.get("counts", []) if bins else []
        if not edges_list or not counts_list:
            edges_list, counts_list = quantile_bins(values)
        edges = np.asarray(edges_list, dtype=np.float64)
        counts = np.asarray(counts_list, dtype=np.int64)
        if edges.size != counts.size + 1:
            raise ValueError(f"{edges.size} bin edges for {counts.size} counts")
        if counts.size == 1:
            # One value (or one bin): below it, it, above it, so a move either way shows.
            value = float(edges[0])
            cuts = np.array([value, np.nextafter(value, math.inf)])
            counts = np.array([0, int(counts[0]), 0], dtype=np.int64)
        else:
            cuts = edges[1:-1]
        return cls(values=values, std=float(np.std(values)), cuts=cuts, counts=counts)

    def bin_counts(self, sorted_current: FloatArray) -> IntArray:
        """Current counts in the reference's bins, from a sorted array: searchsorted of the cuts."""
        below = np.searchsorted(sorted_current, self.cuts, side="left")
        return np.diff(np.concatenate(([0], below, [sorted_current.size]))).astype(np.int64)


@dataclass(frozen=True)
class NumericDrift:
    rows: int  # finite current values compared
    psi: float
    jensen_shannon: float
    wasserstein: float  # W1 in the column's units
    wasserstein_norm: float  # W1 / the reference standard deviation (floored at STD_FLOOR)
    ks_statistic: float
    ks_pvalue: float


def numeric_drift(reference: Reference, current: np.ndarray) -> NumericDrift:
    """All four measures of one numeric column: the current values (NaN and infinities left out) are sorted
    once, then binned for PSI and Jensen-Shannon and merged with the reference for KS and Wasserstein."""
    return numeric_drift_sorted(reference, sorted_finite(current))


def numeric_drift_sorted(reference: Reference, values: FloatArray) -> NumericDrift:
    """`numeric_drift` of current values already finite and sorted (`sorted_finite`)."""
    if values.size == 0:
        raise ValueError("the current window has no finite values")
    counts = reference.bin_counts(values)
    ks, w1 = ks_and_wasserstein(reference.values, values)
    return NumericDrift(
        rows=int(values.size),
        psi=psi(reference.counts, counts),
        jensen_shannon=jensen_shannon(reference.counts, counts),
        wasserstein=w1,
        wasserstein_norm=w1 / max(reference.std, STD_FLOOR),
        ks_statistic=ks,
        ks_pvalue=ks_pvalue(ks, reference.values.size, values.size),
    )


# ---------------------------------------------------------------------------------------------------------
# Categorical drift


@dataclass(frozen=True, eq=False)
class CategoricalReference:
    """One categorical column's reference: the profile's categories and counts, always with an "(other)"
    bucket, where current values outside the listed categories go."""

    categories: tuple[str, ...]
    counts: IntArray

    @classmethod
    def build(
        cls, bins: Mapping[str, Sequence[Any]] | None = None, sample: np.ndarray | None = None
    ) -> CategoricalReference:
        """From the profile's bins ({"categories", "counts"}), or counted from a sample when none are given."""
        categories = [str(c) for c in bins.get("categories", [])] if bins else []
        counts = [int(c) for c in bins.get("counts", [])] if bins else []
        if not categories and sample is not None:
            counted = Counter(str(v) for v in np.asarray(sample).tolist() if not _is_null(v)).most_common()
            categories, counts = [c for c, _ in counted], [n for _, n in counted]
        if not categories or sum(counts) == 0:
            raise ValueError("the reference has no categories")
        if OTHER not in categories:
            categories.append(OTHER)
            counts.append(0)
        return cls(categories=tuple(categories), counts=np.asarray(counts, dtype=np.int64))

    def current_counts(self, values: np.ndarray) -> IntArray:
        """Current counts per category; nulls left out, values outside the categories into "(other)"."""
        index = {name: i for i, name in enumerate(self.categories)}
        other = index[OTHER]
        counts = np.zeros(len(self.categories), dtype=np.int64)
        for value, count in Counter(np.asarray(values).tolist()).items():
            if not _is_null(value):
                counts[index.get(str(value), other)] += count
        return counts


@dataclass(frozen=True)
class CategoricalDrift:
    rows: int  # non-null current values compared
    chi2: float
    chi2_pvalue: float
    jensen_shannon: float


def chi_squared(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Goodness of fit of the current counts to the reference shares (`scipy.stats.chisquare`); a category
    the reference never saw gets the share PSI_EPSILON, so an unseen value gives a large, finite statistic;
    categories empty on both sides are left out."""
    reference = np.asarray(reference_counts, dtype=np.float64)
    observed = np.asarray(current_counts, dtype=np.float64)
    seen = (reference > 0) | (observed > 0)  # a category empty on both sides adds no degree of freedom
    reference, observed = reference[seen], observed[seen]
    shares = _shares(reference)
    shares = np.where(shares == 0, PSI_EPSILON, shares)
    expected = shares / shares.sum() * observed.sum()
    result = stats.chisquare(observed, expected)
    return float(result.statistic), float(result.pvalue)


def categorical_drift(reference: CategoricalReference, current: np.ndarray) -> CategoricalDrift:
    """Chi-squared (statistic, p-value) and Jensen-Shannon distance of one categorical column."""
    counts = reference.current_counts(current)
    rows = int(counts.sum())
    if rows == 0:
        raise ValueError("the current window has no values")
    statistic, pvalue = chi_squared(reference.counts, counts)
    return CategoricalDrift(
        rows=rows, chi2=statistic, chi2_pvalue=pvalue, jensen_shannon=jensen_shannon(reference.counts, counts)
    )


# ---------------------------------------------------------------------------------------------------------
# The drift report


@dataclass(frozen=True)
class ColumnDrift:
    """One row of the drift table. `drifted` is None when there is no verdict; `status` says why."""

    name: str
    kind: str  # NUMERIC or CATEGORICAL
    rows: int  # current values compared (present, and finite if numeric)
    measure: str  # the kind's primary measure: "wasserstein_norm" or "jensen_shannon"
    value: float | None
    threshold: float
    drifted: bool | None
    status: str  # OK, NOT_ENOUGH_ROWS, MISSING or NO_REFERENCE
    measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftReport:
    """The per-column table and the dataset verdict (None, with the reason in `status`, when there is none)."""

    rows: int  # rows in the current window
    min_rows: int
    columns: tuple[ColumnDrift, ...]
    drifted: int  # columns drifted
    judged: int  # columns with a verdict
    share: float | None  # drifted / judged
    threshold: float  # the share at which the dataset drifts
    dataset_drift: bool | None
    status: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _column_drift(
    column: Mapping[str, Any],
    sample: np.ndarray | None,
    current: np.ndarray | None,
    *,
    window_rows: int,
    thresholds: Thresholds,
    min_rows: int,
) -> ColumnDrift:
    name = str(column["name"])
    kind = NUMERIC if column.get("type") == NUMERIC else CATEGORICAL
    measure, threshold = (
        ("wasserstein_norm", thresholds.wasserstein)
        if kind == NUMERIC
        else ("jensen_shannon", thresholds.jensen_shannon)
    )

    def verdictless(status: str, rows: int = 0) -> ColumnDrift:
        return ColumnDrift(name, kind, rows, measure, None, threshold, None, status)

    if current is None:
        return verdictless(MISSING)
    bins = column.get("bins") or {}
    try:
        if kind == NUMERIC:
            if sample is None:
                return verdictless(NO_REFERENCE)
            reference = Reference.build(sample, bins)
            present = sorted_finite(current)
            if window_rows < min_rows or present.size < min_rows:
                return verdictless(NOT_ENOUGH_ROWS, int(present.size))
            measures: dict[str, float] = asdict(numeric_drift_sorted(reference, present))
        else:
            categorical = CategoricalReference.build(bins, sample)
            rows = int(categorical.current_counts(current).sum())
            if window_rows < min_rows or rows < min_rows:
                return verdictless(NOT_ENOUGH_ROWS, rows)
            measures = asdict(categorical_drift(categorical, current))
    except ValueError:
        return verdictless(NO_REFERENCE)
    rows = int(measures.pop("rows"))
    value = measures[measure]
    return ColumnDrift(name, kind, rows, measure, value, threshold, bool(value >= threshold), OK, measures)


def _report(
    columns: Sequence[Mapping[str, Any]],
    reference_sample: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    *,
    thresholds: Thresholds,
    min_rows: int,
) -> DriftReport:
    sizes = {np.asarray(values).shape[0] for values in current.values()}
    if len(sizes) > 1:
        raise ValueError(f"the current columns differ in length: {sorted(sizes)}")
    rows = sizes.pop() if sizes else 0
    table = tuple(
        _column_drift(
            column,
            reference_sample.get(str(column["name"])),
            current.get(str(column["name"])),
            window_rows=rows,
            thresholds=thresholds,
            min_rows=min_rows,
        )
        for column in columns
    )
    judged = [c for c in table if c.drifted is not None]
    drifted = sum(1 for c in judged if c.drifted)
    share = drifted / len(judged) if judged else None
    if rows < min_rows:
        status = NOT_ENOUGH_ROWS
    elif share is None:
        status = NO_COLUMNS
    else:
        status = OK
    return DriftReport(
        rows=rows,
        min_rows=min_rows,
        columns=table,
        drifted=drifted,
        judged=len(judged),
        share=share,
        threshold=thresholds.dataset_share,
        dataset_drift=bool(share >= thresholds.dataset_share) if share is not None and status == OK else None,
        status=status,
    )


def drift_report(
    reference_profile: Mapping[str, Any],
    reference_sample: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    min_rows: int = MIN_ROWS,
) -> DriftReport:
    """Feature drift of a current window against the baseline: one row per profiled feature (numeric:
    PSI, Jensen-Shannon, Wasserstein, KS; categorical: chi-squared, Jensen-Shannon), each judged on its
    kind's primary measure, and the dataset verdict on the share of drifted features.

    `reference_sample` and `current` map column names to arrays of equal length within each. A window
    with fewer than `min_rows` rows (or a column with fewer present values) gets no verdict: its status is
    "not enough rows". A profiled feature absent from the window is "missing"; neither is judged.
    """
    return _report(
        reference_profile.get("features") or [],
        reference_sample,
        current,
        thresholds=thresholds,
        min_rows=min_rows,
    )


def prediction_drift(
    reference_profile: Mapping[str, Any],
    reference_sample: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    min_rows: int = MIN_ROWS,
) -> DriftReport:
    """Drift of the model's outputs: the same measures as `drift_report`, on the profile's prediction
    columns ("prediction", "prediction[0]", ...; their reference values are in the sample too)."""
    return _report(
        reference_profile.get("predictions") or [],
        reference_sample,
        current,
        thresholds=thresholds,
        min_rows=min_rows,
    )


# ---------------------------------------------------------------------------------------------------------
# Data quality


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
            null_mask = [_is_null(v) for v in items]
            number_mask = [_is_number(v) and not n for v, n in zip(items, null_mask, strict=True)]
            nulls = sum(null_mask)
            type_errors = rows - nulls - sum(number_mask)
            numbers = np.array([float(v) for v, ok in zip(items, number_mask, strict=True) if ok], dtype=np.float64)
        low, high = column.get("min"), column.get("max")
        if low is None or high is None:
            out = None
        else:
            valid = numbers[~np.isnan(numbers)]
            out = int(np.count_nonzero((valid < float(low)) | (valid > float(high))))
    else:
        items = array.tolist()
        nulls = sum(1 for v in items if _is_null(v))
        scalar = (str, bool, int, float, np.generic)
        type_errors = sum(1 for v in items if not _is_null(v) and not isinstance(v, scalar))
        categories = (column.get("bins") or {}).get("categories") or []
        if categories and OTHER not in categories:
            known = {str(c) for c in categories}
            out = sum(1 for v in items if not _is_null(v) and isinstance(v, scalar) and str(v) not in known)
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


# ---------------------------------------------------------------------------------------------------------
# Model performance


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
    rows = int(truth.size)
    if rows == 0:
        raise ValueError("no labelled rows")
    labels = np.unique(np.concatenate([truth, predicted]))
    accuracy = float(np.mean(truth == predicted))
    score_array = np.asarray(scores, dtype=np.float64) if scores is not None else None
    if labels.size <= 2:
        positive = 1 if np.any(labels == 1) else labels[-1]  # unique: sorted
        actual, guessed = truth == positive, predicted == positive
        tp = int(np.sum(actual & guessed))
        precision = _ratio(tp, int(guessed.sum()))
        recall = _ratio(tp, int(actual.sum()))
        if score_array is not None:
            if score_array.ndim == 2:
                score_array = score_array[:, int(np.searchsorted(labels, positive))]
            auc, auc_from = binary_auc(actual, score_array), "scores"
        else:
            auc, auc_from = binary_auc(actual, guessed.astype(np.float64)), "predictions"
        return ClassificationMetrics(
            rows=rows,
            average="binary",
            positive=positive.item() if isinstance(positive, np.generic) else positive,
            accuracy=accuracy,
            precision=precision,
            recall=recall,
            auc=auc,
            auc_from=auc_from if auc is not None else None,
        )
    precisions, recalls = [], []
    for label in labels:
        actual, guessed = truth == label, predicted == label
        tp = int(np.sum(actual & guessed))
        precisions.append(_ratio(tp, int(guessed.sum())))
        recalls.append(_ratio(tp, int(actual.sum())))
    auc = None
    if score_array is not None:
        if score_array.ndim != 2 or score_array.shape[1] != labels.size:
            raise ValueError(f"multi-class scores need one column per label ({labels.size})")
        per_class = [binary_auc(truth == label, score_array[:, i]) for i, label in enumerate(labels)]
        known = [a for a in per_class if a is not None]
        auc = float(np.mean(known)) if known else None
    return ClassificationMetrics(
        rows=rows,
        average="macro",
        positive=None,
        accuracy=accuracy,
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


# ---------------------------------------------------------------------------------------------------------
# Endpoint performance


@dataclass(frozen=True)
class EndpointStats:
    """Traffic over a window: requests per second, latency percentiles (numpy's linear interpolation) and
    the shares of server errors (status >= 500) and client errors (4xx). None where there were no requests
    or the window has no length."""

    requests: int
    seconds: float
    requests_per_second: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float | None  # 5xx
    client_error_rate: float | None  # 4xx


def _endpoint_stats(latency: FloatArray, status: IntArray, seconds: float) -> EndpointStats:
    requests = int(latency.size)
    if requests == 0:
        return EndpointStats(0, seconds, 0.0 if seconds > 0 else None, None, None, None, None, None)
    p50, p95, p99 = (float(p) for p in np.percentile(latency, [50, 95, 99]))
    return EndpointStats(
        requests=requests,
        seconds=seconds,
        requests_per_second=requests / seconds if seconds > 0 else None,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        error_rate=float(np.mean(status >= 500)),
        client_error_rate=float(np.mean((status >= 400) & (status < 500))),
    )


def endpoint_performance(
    timestamps: np.ndarray,
    latency_ms: np.ndarray,
    status: np.ndarray,
    slot: np.ndarray | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, EndpointStats]:
    """Endpoint performance over the window [start, end] (seconds; default: the first and last timestamps):
    key "all" for every request, then one key per slot."""
    times = as_float(timestamps)
    latency = as_float(latency_ms)
    codes = np.asarray(status, dtype=np.int64)
    if not (times.shape == latency.shape == codes.shape):
        raise ValueError("timestamps, latency_ms and status must have the same length")
    first = start if start is not None else (float(times.min()) if times.size else 0.0)
    last = end if end is not None else (float(times.max()) if times.size else 0.0)
    seconds = max(0.0, last - first)
    result = {"all": _endpoint_stats(latency, codes, seconds)}
    if slot is not None:
        slots = np.asarray(slot).astype(str)
        if slots.shape != times.shape:
            raise ValueError("slot must have the same length as timestamps")
        for name in np.unique(slots).tolist():
            chosen = slots == name
            result[str(name)] = _endpoint_stats(latency[chosen], codes[chosen], seconds)
    return result
