"""Drift of a window against a model's baseline: per-column verdicts and the dataset's, for features and predictions.

The baseline is what a model was registered with (`mlgate.domain.profile`): each column's profile (type,
range, histogram bins) and the reference sample of up to 10,000 training rows; the measures themselves are
`mlgate.domain.distances`'.

Drift of a numeric column compares the current window with the reference on the profile's bins (PSI,
Jensen-Shannon distance) and with the reference sample itself (Wasserstein distance, Kolmogorov-Smirnov).
Each current column is sorted once; its bin counts are `searchsorted` of the bin edges, and the KS
statistic and Wasserstein distance come from `searchsorted` of the reference's values in it and one
summing pass, so 1,000,000 rows cost one sort and one linear pass. A categorical column is compared on the
profile's category counts (chi-squared, Jensen-Shannon distance).

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

from mlgate.domain.columns import CATEGORICAL, NUMERIC, FloatArray, IntArray, is_null, sorted_finite
from mlgate.domain.distances import chi_squared, jensen_shannon, ks_and_wasserstein, ks_pvalue, psi
from mlgate.domain.profile import OTHER, quantile_bins

# Default thresholds. The primary measure of each kind decides "drifted"; the others are information.
WASSERSTEIN_THRESHOLD = 0.1  # normalized Wasserstein distance, numeric columns
JENSEN_SHANNON_THRESHOLD = 0.1  # Jensen-Shannon distance (base 2), categorical columns
PSI_THRESHOLD = 0.2  # information: the usual "significant shift" line
KS_PVALUE_THRESHOLD = 0.05  # information
DATASET_DRIFT_SHARE = 0.5  # the dataset drifts when this share of its judged columns drifts
MIN_ROWS = 100  # below this many current rows, no verdict

# The least standard deviation the Wasserstein distance is divided by (Evidently's floor too), so a
# constant reference column still gives a finite, comparable value: 0 when nothing moved.
STD_FLOOR = 1e-3

OK = "ok"
NOT_ENOUGH_ROWS = "not enough rows"
MISSING = "missing"
NO_REFERENCE = "no reference"
NO_COLUMNS = "no columns judged"


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
            counted = Counter(str(v) for v in np.asarray(sample).tolist() if not is_null(v)).most_common()
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
            if not is_null(value):
                counts[index.get(str(value), other)] += count
        return counts


@dataclass(frozen=True)
class CategoricalDrift:
    rows: int  # non-null current values compared
    chi2: float
    chi2_pvalue: float
    jensen_shannon: float


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
