"""Rollout quality: the serving host's row comparison and bins (`mlgate.serving.shadow`), the windows and
verdicts a rollout reads from its counters (`mlgate.domain.rollout_quality`), and the policy keys."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from mlgate.config import parse_config
from mlgate.domain import rollout_quality as quality
from mlgate.errors import ConfigError
from mlgate.serving import workers
from mlgate.serving.metrics import Metrics
from mlgate.serving.shadow import MAX_LABELS, OTHER, ShadowStats, bin_keys, disagreeing_rows


def test_rows_disagree_on_labels_by_equality_and_on_numbers_beyond_the_tolerance() -> None:
    assert disagreeing_rows(np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1]), 0.5).tolist() == [0, 1, 0, 1]
    assert disagreeing_rows(np.array(["a", "b"]), np.array(["a", "c"]), 0.0).tolist() == [False, True]
    stable = np.array([0.5, 0.5, 100.0, 100.0, np.nan, np.nan])
    candidate = np.array([0.505, 0.52, 100.9, 102.0, np.nan, 1.0])
    # absolute below 1 (0.01), relative above (1% of 100)
    assert disagreeing_rows(stable, candidate, 0.01).tolist() == [False, True, False, True, False, True]
    # several outputs: any differing one makes the row differ; another shape: every row differs
    two = np.array([[0.1, 0.9], [0.6, 0.4]])
    assert disagreeing_rows(two, np.array([[0.1, 0.9], [0.6, 0.1]]), 0.01).tolist() == [False, True]
    assert disagreeing_rows(two, np.array([1, 0]), 0.01).tolist() == [True, True]


def test_predictions_are_binned_by_edges_by_label_or_not_at_all() -> None:
    assert bin_keys(np.array([-1.5, 0.2, 0.5, 3.5]), (0.0, 0.5, 1.0)) == ["0", "1", "2", "3"]
    assert bin_keys(np.array([0, 1]), (0.0, 0.0)) == ["0", "1"]  # labels are their own bins, edges or not
    assert bin_keys(np.array([0, 1, 1]), None) == ["0", "1", "1"]
    assert bin_keys(np.array([0.0, 1.0]), None) == ["0", "1"]  # float labels
    assert bin_keys(np.array(["yes", "no"]), None) == ["yes", "no"]
    assert bin_keys(np.array([0.25, 1.0]), None) is None  # scores without bins: no drift figure


def test_the_host_counts_bounded_labels_and_adds_another_processs_counters() -> None:
    stats = ShadowStats()
    stats.compare("web", "green", np.array([0, 1, 1, 1]), np.array([1, 1, 1, 1]), tolerance=0.0, edges=None)
    stats.compare("web", "green", np.array([2]), np.array([2, 2]), tolerance=0.0, edges=None)  # rows lost
    many = np.arange(MAX_LABELS + 5)
    stats.compare("web", "blue", many, many, tolerance=0.0, edges=None)
    shown = stats.stats()
    assert shown["web"]["green"] == {
        "compared": 4,
        "disagreed": 1,
        "failed": 1,
        "dropped": 0,
        "stable_counts": {"0": 1, "1": 3},
        "candidate_counts": {"1": 4},
    }
    assert len(shown["web"]["blue"]["stable_counts"]) == MAX_LABELS + 1
    assert shown["web"]["blue"]["stable_counts"][OTHER] == 5

    total = ShadowStats()
    total.add(shown)
    total.add(shown)
    total.add({"web": {"green": {"compared": "many"}}})  # another version's counters: ignored
    assert total.stats()["web"]["green"]["compared"] == 8
    assert total.stats()["web"]["green"]["stable_counts"] == {"0": 2, "1": 6}

    # a worker's counters reach the host's total through the snapshot every worker writes
    worker = Metrics()
    worker.shadow = stats
    host = Metrics()
    workers._add_snapshot(host, orjson.loads(orjson.dumps(workers._snapshot(worker))))
    assert host.shadow.stats() == shown


def _snapshot(compared: int, disagreed: int, stable: dict[str, int], candidate: dict[str, int]) -> dict[str, Any]:
    pair = {
        "compared": compared,
        "disagreed": disagreed,
        "failed": 1,
        "dropped": 2,
        "stable_counts": stable,
        "candidate_counts": candidate,
    }
    return {"endpoints": {}, "shadow": {"web": {"green": pair}}}


def test_a_window_is_the_difference_of_two_snapshots() -> None:
    before = _snapshot(10, 1, {"0": 5, "1": 5}, {"0": 5, "1": 5})
    after = _snapshot(110, 81, {"0": 55, "1": 55}, {"0": 5, "1": 105})
    observed = quality.quality_window(before, after, endpoint="web", slot="green")
    assert (observed.compared, observed.disagreed, observed.failed, observed.dropped) == (100, 80, 0, 0)
    assert observed.disagreement_rate == pytest.approx(0.8)
    assert observed.drift == pytest.approx(quality.prediction_drift({"0": 50, "1": 50}, {"1": 100}))
    assert observed.drift is not None and observed.drift > 1
    restarted = quality.quality_window(after, before, endpoint="web", slot="green")
    assert (restarted.compared, restarted.disagreed) == (10, 1)
    nothing = quality.quality_window({}, {}, endpoint="web", slot="green")
    assert nothing == quality.NOTHING_COMPARED and nothing.as_json()["disagreement_rate"] is None
    assert quality.prediction_drift({"0": 50, "1": 50}, {"0": 50, "1": 50}) == pytest.approx(0.0)
    assert quality.prediction_drift({}, {"1": 3}) is None


def test_quality_breaches_name_the_figure_and_the_limit_once_enough_rows_were_compared() -> None:
    limits = quality.Quality(max_disagreement=0.2, max_prediction_drift=0.25, min_compared=50)
    wrong = quality.QualityWindow(compared=100, disagreed=90, failed=0, dropped=0, drift=3.0)
    reason = quality.quality_breach(wrong, limits, traffic=10, slot="blue", stable="green")
    assert reason is not None
    assert "disagreement rate 90.00% (90 of 100 rows answered unlike slot 'green')" in reason
    assert "slot 'blue' at 10% traffic" in reason and "max_disagreement 20.00%" in reason
    drifted = quality.QualityWindow(compared=100, disagreed=10, failed=0, dropped=0, drift=0.4)
    reason = quality.quality_breach(drifted, limits, traffic=50, slot="blue", stable="green")
    assert reason is not None and "prediction drift (PSI) 0.400" in reason and "max_prediction_drift 0.25" in reason
    few = quality.QualityWindow(compared=49, disagreed=49, failed=0, dropped=0, drift=9.0)
    assert quality.quality_breach(few, limits, traffic=10, slot="blue", stable="green") is None
    fine = quality.QualityWindow(compared=100, disagreed=20, failed=0, dropped=0, drift=None)
    assert quality.quality_breach(fine, limits, traffic=10, slot="blue", stable="green") is None


def test_the_quality_policy_has_defaults_and_refuses_values_out_of_range() -> None:
    declared = "endpoints:\n  production:\n    - {name: web, model: diabetes}\n"
    policy = parse_config(declared).endpoints["production"][0].quality
    assert (policy.shadow_share, policy.max_disagreement, policy.max_prediction_drift) == (0.2, 0.2, 0.25)
    assert (policy.min_compared, policy.tolerance) == (50, 0.01)
    with pytest.raises(ConfigError, match="shadow_share"):
        parse_config("endpoints:\n  production:\n    - {name: web, quality: {shadow_share: 1.5}}\n")
