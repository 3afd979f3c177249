"""The monitoring signal library: drift measures against hand-computed values and scipy, the drift verdicts
on samples from the training distribution and on shifted ones, data quality on broken inputs, and model
and endpoint performance against scikit-learn and hand counts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn import metrics

from mlgate.domain import distances
from mlgate.domain import drift as drifts
from mlgate.domain import profile as profiles
from mlgate.domain.columns import CATEGORICAL, NUMERIC
from mlgate.domain.data_quality import data_quality, quality_report
from mlgate.domain.endpoint_performance import endpoint_performance
from mlgate.domain.model_performance import classification_metrics, regression_metrics

# ---------------------------------------------------------------------------------------------------------
# A diabetes-like baseline: 8 numeric features and one categorical, profiled as registration profiles them.

FEATURES = [
    "Pregnancies",
    "PlasmaGlucose",
    "DiastolicBloodPressure",
    "TricepsThickness",
    "SerumInsulin",
    "BMI",
    "DiabetesPedigree",
    "Age",
]
SMOKER = ["never", "former", "current"]


def patients(rows: int, seed: int, *, shift: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Synthetic patients; each feature named in `shift` moves up by one of its standard deviations."""
    rng = np.random.default_rng(seed)
    age = 21 + rng.gamma(1.6, 6.5, rows)
    bmi = 17.0 + rng.gamma(5.0, 2.8, rows)
    columns = {
        "Pregnancies": rng.poisson(np.clip(0.5 + (age - 21) * 0.18, 0.3, 8.0)).astype(np.float64),
        "PlasmaGlucose": np.rint(rng.normal(105.0, 28.0, rows) + 0.4 * (bmi - 31.0)),
        "DiastolicBloodPressure": np.rint(rng.normal(71.0, 15.0, rows) + 0.2 * (age - 30.0)),
        "TricepsThickness": np.rint(5.0 + rng.gamma(4.0, 5.8, rows)),
        "SerumInsulin": np.rint(np.exp(rng.normal(4.45, 0.75, rows))),
        "BMI": np.round(bmi, 2),
        "DiabetesPedigree": np.round(np.exp(rng.normal(-0.95, 0.62, rows)), 3),
        "Age": np.rint(age),
    }
    for name in shift:
        columns[name] = columns[name] + columns[name].std()
    columns["Smoker"] = np.array(SMOKER, dtype=object)[rng.choice(3, size=rows, p=[0.6, 0.25, 0.15])]
    return columns


@pytest.fixture(scope="module")
def baseline() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    training = patients(10_000, seed=0)
    predictions = {"prediction": (training["PlasmaGlucose"] > 120).astype(np.float64)}
    profile = profiles.build_profile(
        data="patients@1",
        rows=10_000,
        features=training,
        label=None,
        predictions=predictions,
        sample={"rows": 10_000},
        notes=[],
    )
    return profile, {**training, **predictions}


# ---------------------------------------------------------------------------------------------------------
# Distances by hand


def test_psi_by_hand() -> None:
    # shares 0.5/0.5 -> 0.25/0.75: -0.25 ln 0.5 + 0.25 ln 1.5 = 0.25 ln 3
    assert distances.psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(0.25 * math.log(3))
    assert distances.psi(np.array([10, 30]), np.array([100, 300])) == pytest.approx(0.0)
    # an empty reference bin counts as a share of 1e-4
    expected = 0.5 * math.log(2) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert distances.psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(expected)


def test_jensen_shannon_by_hand_and_against_scipy() -> None:
    assert distances.jensen_shannon(np.array([1, 0]), np.array([0, 1])) == pytest.approx(1.0)
    assert distances.jensen_shannon(np.array([3, 7]), np.array([30, 70])) == pytest.approx(0.0, abs=1e-7)
    # p = (.5, .5), q = (1, 0), m = (.75, .25): KL(p||m) = .5 log2(2/3) + .5, KL(q||m) = log2(4/3)
    divergence = ((0.5 * math.log2(2 / 3) + 0.5) + math.log2(4 / 3)) / 2
    assert distances.jensen_shannon(np.array([5, 5]), np.array([8, 0])) == pytest.approx(math.sqrt(divergence))
    rng = np.random.default_rng(3)
    for _ in range(20):
        p, q = rng.integers(0, 50, 7), rng.integers(0, 50, 7)
        p[0], q[1] = 1, 1  # no all-zero distribution
        assert distances.jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2))


def test_bins_extend_to_infinity_and_are_closed_on_the_left() -> None:
    reference = drifts.Reference.build(np.arange(10.0), {"edges": [0.0, 5.0, 9.0], "counts": [5, 5]})
    assert reference.counts.tolist() == [5, 5]
    current = np.sort(np.array([-100.0, 0.0, 4.99, 5.0, 9.0, 1e9]))
    assert reference.bin_counts(current).tolist() == [3, 3]
    drift = drifts.numeric_drift(reference, current)
    assert drift.psi == pytest.approx(0.0)
    assert drift.jensen_shannon == pytest.approx(0.0, abs=1e-7)


def test_reference_without_profile_bins_uses_the_profiles_quantile_bins() -> None:
    sample = np.random.default_rng(0).normal(size=1_000)
    reference = drifts.Reference.build(sample)
    edges, counts = profiles.quantile_bins(sample)
    assert reference.cuts.tolist() == edges[1:-1]
    assert reference.counts.tolist() == counts
    assert reference.values.tolist() == sorted(sample.tolist())
    assert reference.std == pytest.approx(float(np.std(sample)))


def test_a_constant_reference_sees_a_move_either_way_and_has_a_floored_std() -> None:
    reference = drifts.Reference.build(np.full(500, 5.0), {"edges": [5.0, 5.0], "counts": [500]})
    same = drifts.numeric_drift(reference, np.full(200, 5.0))
    assert (same.psi, same.wasserstein_norm, same.ks_statistic) == (0.0, 0.0, 0.0)
    moved = drifts.numeric_drift(reference, np.full(200, 5.0005))
    assert moved.psi > drifts.PSI_THRESHOLD
    assert moved.wasserstein_norm == pytest.approx(0.0005 / drifts.STD_FLOOR)
    assert moved.ks_statistic == 1.0


SIZES = [(1, 2), (3, 8), (50, 50), (200, 37), (1_000, 5_000), (10_000, 30_000)]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_ks_and_wasserstein_agree_with_scipy(n: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(n * 7 + m)
    reference = rng.normal(0.0, 1.0, n)
    current = rng.normal(0.3, 1.4, m)
    if ties:  # few distinct values, shared by both samples
        reference, current = np.round(reference, 0), np.round(current, 0)
    drift = drifts.numeric_drift(drifts.Reference.build(reference), current)
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert drift.ks_statistic == pytest.approx(expected.statistic, abs=1e-12)
    if expected.pvalue >= distances.KS_TINY_PVALUE:
        assert drift.ks_pvalue == pytest.approx(expected.pvalue, rel=1e-9)
    else:  # far below any threshold: Kolmogorov's limit distribution, larger than scipy's (conservative)
        assert expected.pvalue <= drift.ks_pvalue * (1 + 1e-9)
        assert drift.ks_pvalue < distances.KS_TINY_PVALUE
    assert drift.wasserstein == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-9, abs=1e-12)
    std = max(float(np.std(reference)), drifts.STD_FLOOR)
    assert drift.wasserstein_norm == pytest.approx(drift.wasserstein / std)


def test_ks_and_wasserstein_agree_with_scipy_on_many_small_random_pairs() -> None:
    rng = np.random.default_rng(99)
    for case in range(300):
        n, m = rng.integers(1, 60, 2)
        decimals = int(rng.integers(-1, 3))  # -1: a handful of distinct values, many ties
        reference = np.round(rng.normal(0.0, 5.0, n), decimals)
        current = np.round(rng.normal(rng.normal(0.0, 8.0), rng.uniform(0.1, 10.0), m), decimals)
        ks, w1 = distances.ks_and_wasserstein(np.sort(reference), np.sort(current))
        assert ks == pytest.approx(stats.ks_2samp(reference, current).statistic, abs=1e-12), case
        assert w1 == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-9, abs=1e-12), case


def test_ks_and_wasserstein_of_disjoint_and_identical_samples() -> None:
    reference = np.arange(10.0)
    assert distances.ks_and_wasserstein(reference, reference + 100.0) == (1.0, pytest.approx(100.0))
    assert distances.ks_and_wasserstein(reference, reference - 100.0) == (1.0, pytest.approx(100.0))
    assert distances.ks_and_wasserstein(reference, np.repeat(reference, 3)) == (0.0, pytest.approx(0.0, abs=1e-12))


def test_numeric_drift_leaves_out_missing_and_infinite_values() -> None:
    reference = drifts.Reference.build(np.arange(100.0))
    clean = drifts.numeric_drift(reference, np.arange(0.0, 100.0, 2.0))
    dirty = drifts.numeric_drift(reference, np.concatenate([np.arange(0.0, 100.0, 2.0), [np.nan, np.inf, -np.inf]]))
    assert dirty == clean
    assert dirty.rows == 50


# ---------------------------------------------------------------------------------------------------------
# Categorical drift


def test_chi_squared_and_jensen_shannon_of_categories_by_hand() -> None:
    reference = drifts.CategoricalReference.build({"categories": ["a", "b"], "counts": [50, 50]})
    assert reference.categories == ("a", "b", profiles.OTHER)
    drift = drifts.categorical_drift(reference, np.array(["a"] * 25 + ["b"] * 75 + [None], dtype=object))
    # expected 50/50 of 100 rows: (25-50)^2/50 + (75-50)^2/50 = 25, one degree of freedom
    assert drift.rows == 100
    assert drift.chi2 == pytest.approx(25.0)
    assert drift.chi2_pvalue == pytest.approx(stats.chi2.sf(25.0, 1))
    assert drift.jensen_shannon == pytest.approx(jensenshannon([0.5, 0.5], [0.25, 0.75], base=2))


def test_unseen_categories_go_to_other_and_count_as_drift() -> None:
    reference = drifts.CategoricalReference.build({"categories": ["a", "b", profiles.OTHER], "counts": [60, 30, 10]})
    current = np.array(["a"] * 60 + ["b"] * 30 + ["z", "y"] * 5, dtype=object)
    assert reference.current_counts(current).tolist() == [60, 30, 10]
    assert drifts.categorical_drift(reference, current).jensen_shannon == pytest.approx(0.0, abs=1e-7)

    closed = drifts.CategoricalReference.build({"categories": ["a", "b"], "counts": [50, 50]})
    drift = drifts.categorical_drift(closed, np.array(["a"] * 40 + ["b"] * 40 + ["new"] * 20, dtype=object))
    assert closed.current_counts(np.array(["new", 1, True], dtype=object)).tolist() == [0, 0, 3]
    assert drift.jensen_shannon > drifts.JENSEN_SHANNON_THRESHOLD
    assert math.isfinite(drift.chi2)
    assert drift.chi2_pvalue < 1e-6


# ---------------------------------------------------------------------------------------------------------
# Verdicts


def test_no_alert_on_samples_from_the_training_distribution(baseline: tuple[dict[str, Any], dict]) -> None:
    profile, sample = baseline
    seeds = range(1, 51)
    alarms = 0
    column_alarms = 0
    for seed in seeds:
        report = drifts.drift_report(profile, sample, patients(2_000, seed=seed))
        assert report.status == drifts.OK
        assert report.judged == len(FEATURES) + 1
        alarms += bool(report.dataset_drift)
        column_alarms += report.drifted
    assert alarms / len(seeds) <= 0.05  # the false-alarm bound: at most 2 of 50
    assert column_alarms / (len(seeds) * (len(FEATURES) + 1)) <= 0.05


def test_an_alert_on_drifted_data(baseline: tuple[dict[str, Any], dict]) -> None:
    profile, sample = baseline
    shifted = (*FEATURES[::2], "Age")  # 5 of the 9 features, up by one standard deviation
    report = drifts.drift_report(profile, sample, patients(2_000, seed=7, shift=shifted))
    assert report.dataset_drift is True
    assert {c.name for c in report.columns if c.drifted} == set(shifted)
    row = next(c for c in report.columns if c.name == "Age")
    assert row.kind == NUMERIC
    assert row.measure == "wasserstein_norm"
    assert row.value == row.measures["wasserstein_norm"] > 0.5
    assert row.threshold == drifts.WASSERSTEIN_THRESHOLD
    assert set(row.measures) == {
        "psi",
        "jensen_shannon",
        "wasserstein",
        "wasserstein_norm",
        "ks_statistic",
        "ks_pvalue",
    }
    assert row.measures["psi"] > drifts.PSI_THRESHOLD
    smoker = next(c for c in report.columns if c.name == "Smoker")
    assert (smoker.kind, smoker.measure, smoker.drifted) == (CATEGORICAL, "jensen_shannon", False)
    assert set(smoker.measures) == {"chi2", "chi2_pvalue", "jensen_shannon"}
    as_dict = report.as_dict()
    assert as_dict["dataset_drift"] is True
    assert len(as_dict["columns"]) == len(FEATURES) + 1


def test_a_quarter_of_features_drifted_is_not_dataset_drift_unless_the_threshold_says_so(
    baseline: tuple[dict[str, Any], dict],
) -> None:
    profile, sample = baseline
    current = patients(2_000, seed=8, shift=("BMI", "Age"))
    assert drifts.drift_report(profile, sample, current).dataset_drift is False
    strict = drifts.Thresholds(dataset_share=0.2)
    report = drifts.drift_report(profile, sample, current, thresholds=strict)
    assert (report.drifted, report.judged, report.dataset_drift) == (2, 9, True)


def test_not_enough_rows_gives_no_verdict(baseline: tuple[dict[str, Any], dict]) -> None:
    profile, sample = baseline
    shifted = patients(99, seed=9, shift=tuple(FEATURES))
    report = drifts.drift_report(profile, sample, shifted)
    assert (report.status, report.dataset_drift, report.share) == (drifts.NOT_ENOUGH_ROWS, None, None)
    assert all(c.status == drifts.NOT_ENOUGH_ROWS and c.drifted is None for c in report.columns)
    assert drifts.drift_report(profile, sample, shifted, min_rows=50).dataset_drift is True


def test_a_column_with_too_few_present_values_or_missing_gets_no_verdict(
    baseline: tuple[dict[str, Any], dict],
) -> None:
    profile, sample = baseline
    current = patients(500, seed=10)
    current["BMI"] = np.where(np.arange(500) < 450, np.nan, current["BMI"])
    del current["Age"]
    report = drifts.drift_report(profile, sample, current)
    rows = {c.name: c for c in report.columns}
    assert (rows["BMI"].status, rows["BMI"].rows, rows["BMI"].drifted) == (drifts.NOT_ENOUGH_ROWS, 50, None)
    assert (rows["Age"].status, rows["Age"].drifted) == (drifts.MISSING, None)
    assert report.judged == len(FEATURES) - 1
    assert report.status == drifts.OK


def test_current_columns_of_different_lengths_are_refused(baseline: tuple[dict[str, Any], dict]) -> None:
    profile, sample = baseline
    with pytest.raises(ValueError, match="differ in length"):
        drifts.drift_report(profile, sample, {"BMI": np.ones(200), "Age": np.ones(300)})


def test_prediction_drift(baseline: tuple[dict[str, Any], dict]) -> None:
    profile, sample = baseline
    same = drifts.prediction_drift(profile, sample, {"prediction": (patients(2_000, 11)["PlasmaGlucose"] > 120) * 1.0})
    assert [(c.name, c.drifted) for c in same.columns] == [("prediction", False)]
    shifted = patients(2_000, 12, shift=("PlasmaGlucose",))["PlasmaGlucose"]
    moved = drifts.prediction_drift(profile, sample, {"prediction": (shifted > 120) * 1.0})
    assert moved.dataset_drift is True


# ---------------------------------------------------------------------------------------------------------
# Data quality


NUMERIC_COLUMN = {"name": "x", "type": "numeric", "min": 0.0, "max": 10.0}


def test_quality_of_a_broken_numeric_column() -> None:
    values = np.array([1.0, None, "abc", 500, float("nan"), True, 3, -1, "7", [1]], dtype=object)
    quality = data_quality(NUMERIC_COLUMN, values)
    assert (quality.rows, quality.nulls, quality.type_errors, quality.out_of_range) == (10, 2, 4, 2)
    assert (quality.null_rate, quality.type_error_rate, quality.out_of_range_rate) == (0.2, 0.4, 0.2)


def test_quality_of_a_typed_numeric_column() -> None:
    quality = data_quality(NUMERIC_COLUMN, np.array([0.0, 10.0, np.nan, np.inf, 10.5, 5.0]))
    assert (quality.nulls, quality.type_errors, quality.out_of_range) == (1, 0, 2)
    unranged = data_quality({"name": "x", "type": "numeric", "min": None, "max": None}, np.ones(4))
    assert (unranged.out_of_range, unranged.out_of_range_rate) == (None, None)


def test_quality_of_a_categorical_column() -> None:
    closed = {"name": "c", "type": "categorical", "bins": {"categories": ["a", "b"], "counts": [5, 5]}}
    values = np.array(["a", "b", None, "z", {"k": 1}, float("nan"), "a", 1], dtype=object)
    quality = data_quality(closed, values)
    assert (quality.nulls, quality.type_errors, quality.out_of_range) == (2, 1, 2)
    open_ended = {**closed, "bins": {"categories": ["a", profiles.OTHER], "counts": [5, 5]}}
    assert data_quality(open_ended, values).out_of_range is None


def test_quality_report_covers_the_profiled_features_present(baseline: tuple[dict[str, Any], dict]) -> None:
    profile, _ = baseline
    current = patients(300, seed=13)
    current["BMI"] = current["BMI"].astype(object)
    current["BMI"][:30] = None
    current["BMI"][30:36] = "n/a"
    current["Age"][:3] = 200.0
    del current["Pregnancies"]
    report = {q.name: q for q in quality_report(profile, current)}
    assert "Pregnancies" not in report
    assert (report["BMI"].nulls, report["BMI"].type_errors) == (30, 6)
    assert report["Age"].out_of_range == 3
    assert report["PlasmaGlucose"].null_rate == 0.0


# ---------------------------------------------------------------------------------------------------------
# Model performance


def test_binary_classification_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(14)
    truth = rng.integers(0, 2, 1_000)
    scores = np.round(np.clip(truth * 0.3 + rng.random(1_000) * 0.7, 0, 1), 2)  # rounded: tied scores
    predicted = (scores > 0.5).astype(int)
    result = classification_metrics(truth, predicted, scores=scores)
    assert (result.average, result.positive, result.auc_from) == ("binary", 1, "scores")
    assert result.accuracy == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert result.precision == pytest.approx(metrics.precision_score(truth, predicted))
    assert result.recall == pytest.approx(metrics.recall_score(truth, predicted))
    assert result.auc == pytest.approx(metrics.roc_auc_score(truth, scores))
    two_columns = np.column_stack([1 - scores, scores])
    assert classification_metrics(truth, predicted, scores=two_columns).auc == pytest.approx(result.auc)
    hard = classification_metrics(truth, predicted)
    assert hard.auc_from == "predictions"
    assert hard.auc == pytest.approx(metrics.roc_auc_score(truth, predicted))


def test_binary_labels_without_1_take_the_larger_as_positive() -> None:
    truth = np.array(["no", "yes", "yes", "no", "yes", "no"])
    predicted = np.array(["no", "yes", "no", "no", "yes", "yes"])
    result = classification_metrics(truth, predicted)
    assert result.positive == "yes"
    assert result.precision == pytest.approx(metrics.precision_score(truth, predicted, pos_label="yes"))
    assert result.recall == pytest.approx(metrics.recall_score(truth, predicted, pos_label="yes"))


def test_multiclass_classification_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(15)
    truth = rng.integers(0, 4, 2_000)
    raw = rng.random((2_000, 4)) + np.eye(4)[truth] * 0.6
    scores = raw / raw.sum(axis=1, keepdims=True)
    predicted = scores.argmax(axis=1)
    predicted[:5] = 3  # and a label predicted but rarely
    result = classification_metrics(truth, predicted, scores=scores)
    assert result.average == "macro"
    assert result.accuracy == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert result.precision == pytest.approx(metrics.precision_score(truth, predicted, average="macro"))
    assert result.recall == pytest.approx(metrics.recall_score(truth, predicted, average="macro"))
    assert result.auc == pytest.approx(metrics.roc_auc_score(truth, scores, multi_class="ovr", average="macro"))
    never_predicted = classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 1]))
    assert never_predicted.precision == pytest.approx(
        metrics.precision_score([0, 1, 2, 2], [0, 1, 1, 1], average="macro", zero_division=0)
    )
    assert never_predicted.auc is None


def test_regression_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(16)
    truth = rng.normal(100, 20, 500)
    predicted = truth + rng.normal(0, 5, 500)
    result = regression_metrics(truth, predicted)
    assert result.mae == pytest.approx(metrics.mean_absolute_error(truth, predicted))
    assert result.rmse == pytest.approx(math.sqrt(metrics.mean_squared_error(truth, predicted)))


# ---------------------------------------------------------------------------------------------------------
# Endpoint performance


def test_endpoint_performance_per_slot() -> None:
    timestamps = np.arange(10, dtype=float)  # 10 requests over 0..9 s
    latency = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], dtype=float)
    status = np.array([200, 200, 500, 404, 200, 200, 503, 200, 200, 200])
    slot = np.array(["blue", "green"] * 5)
    result = endpoint_performance(timestamps, latency, status, slot, start=0.0, end=10.0)
    everything = result["all"]
    assert (everything.requests, everything.requests_per_second) == (10, 1.0)
    assert (everything.error_rate, everything.client_error_rate) == (0.2, 0.1)
    assert everything.p50_ms == pytest.approx(5.5)
    assert everything.p99_ms == pytest.approx(np.percentile(latency, 99))
    blue, green = result["blue"], result["green"]
    assert (blue.requests, blue.requests_per_second, blue.error_rate, blue.client_error_rate) == (5, 0.5, 0.4, 0.0)
    assert (green.error_rate, green.client_error_rate, green.p50_ms) == (0.0, 0.2, 6.0)
    default_window = endpoint_performance(timestamps, latency, status)
    assert set(default_window) == {"all"}
    assert default_window["all"].seconds == 9.0
    empty = endpoint_performance(np.array([]), np.array([]), np.array([]), start=0.0, end=60.0)["all"]
    assert (empty.requests, empty.requests_per_second, empty.p99_ms, empty.error_rate) == (0, 0.0, None, None)
