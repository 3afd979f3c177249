"""Distances between two distributions: PSI, Jensen-Shannon, Kolmogorov-Smirnov, Wasserstein, chi-squared.

Binned measures (PSI, Jensen-Shannon, chi-squared) take the counts of the same bins on both sides; KS and
Wasserstein take the two samples themselves, sorted, and cost one `searchsorted` and one summing pass over
the current sample (see `ks_and_wasserstein`), so 1,000,000 rows cost no more than their sort. scipy gives
the KS and chi-squared distributions.
"""

from __future__ import annotations

import math

import numpy as np

from mlgate.domain.columns import FloatArray

# An empty bin's share in PSI, as Evidently does: ln(0) has no value, and a tiny share keeps one empty
# bin from dominating the sum.
PSI_EPSILON = 1e-4


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
    from scipy import stats  # type: ignore[import-untyped]  # 1.5 s to import: only when a monitor runs

    effective = max(1, round(n * m / (n + m)))  # 1 and 1 value would round to 0
    limit = float(stats.kstwobign.sf(math.sqrt(effective) * statistic))
    if limit < KS_TINY_PVALUE:
        return limit
    return float(np.clip(stats.kstwo.sf(statistic, effective), 0.0, 1.0))


def chi_squared(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Goodness of fit of the current counts to the reference shares (`scipy.stats.chisquare`); a category
    the reference never saw gets the share PSI_EPSILON, so an unseen value gives a large, finite statistic;
    categories empty on both sides are left out."""
    from scipy import stats

    reference = np.asarray(reference_counts, dtype=np.float64)
    observed = np.asarray(current_counts, dtype=np.float64)
    seen = (reference > 0) | (observed > 0)  # a category empty on both sides adds no degree of freedom
    reference, observed = reference[seen], observed[seen]
    shares = _shares(reference)
    shares = np.where(shares == 0, PSI_EPSILON, shares)
    expected = shares / shares.sum() * observed.sum()
    result = stats.chisquare(observed, expected)
    return float(result.statistic), float(result.pvalue)
