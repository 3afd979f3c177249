"""The seam between monitors and the signal maths in `mlgate.domain` (drift, data quality, model and endpoint
performance): one window of an endpoint's requests (and its labelled rows) against the serving version's
baseline (profile and reference sample), as JSON values per signal and per feature, the thresholds broken,
and a verdict.

A window with fewer answered rows than the monitor's `min_rows` gets no verdict ("no-verdict"), whatever
its values: quiet hours neither fire nor resolve an alert.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlgate.domain import drift
from mlgate.domain.data_quality import ColumnQuality
from mlgate.domain.endpoint_performance import endpoint_performance
from mlgate.domain.model_performance import classification_metrics, regression_metrics
from mlgate.domain.monitors import DEFAULT_THRESHOLDS
from mlgate.domain.request_records import PREDICTION
from mlgate.services.monitoring.window import WindowInputs, column_values, feature_values

BREACH, CLEAN, NO_VERDICT = "breach", "clean", "no-verdict"


@dataclass(frozen=True)
class Evaluation:
    rows: int
    values: dict[str, Any]
    breaches: list[dict[str, Any]] = field(default_factory=list)  # `counted: False`: reported, not judged
    verdict: str = NO_VERDICT


def _json(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars plain numbers, floats rounded."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def _drift_values(report: drift.DriftReport) -> dict[str, Any]:
    return {
        "rows": report.rows,
        "status": report.status,
        "drifted": report.drifted,
        "judged": report.judged,
        "share": report.share,
        "threshold": report.threshold,
        "dataset_drift": report.dataset_drift,
        "features": {
            c.name: {
                "kind": c.kind,
                "rows": c.rows,
                "measure": c.measure,
                "value": c.value,
                "threshold": c.threshold,
                "drifted": c.drifted,
                "status": c.status,
                **c.measures,
            }
            for c in report.columns
        },
    }


def _limit(out: list[dict[str, Any]], signal: str, metric: str, value: Any, limit: float, *, ceiling: bool) -> None:
    if value is None or not math.isfinite(limit):
        return
    if (value > limit) if ceiling else (value < limit):
        out.append({"signal": signal, "metric": metric, "value": value, "threshold": limit})


def _drift(
    signal: str, report: drift.DriftReport, limits: dict[str, float], out: list[dict[str, Any]]
) -> dict[str, Any]:
    values = _drift_values(report)
    for column in report.columns:
        if column.drifted:  # reported per feature; the verdict is the dataset's
            out.append(
                {
                    "signal": signal,
                    "metric": column.measure,
                    "feature": column.name,
                    "value": column.value,
                    "threshold": column.threshold,
                    "counted": False,
                }
            )
    if report.dataset_drift:
        out.append(
            {"signal": signal, "metric": "drift_share", "value": report.share, "threshold": limits["drift_share"]}
        )
    return values


def _quality(columns: list[ColumnQuality], limits: dict[str, float], out: list[Any]) -> dict[str, Any]:
    cells = sum(c.rows for c in columns)
    ranged = [c for c in columns if c.out_of_range is not None]
    totals = {
        "null_rate": sum(c.nulls for c in columns) / cells if cells else None,
        "type_error_rate": sum(c.type_errors for c in columns) / cells if cells else None,
        "out_of_range_rate": (
            sum(c.out_of_range or 0 for c in ranged) / sum(c.rows for c in ranged) if ranged and cells else None
        ),
    }
    for metric, value in totals.items():
        _limit(out, "data-quality", metric, value, limits[metric], ceiling=True)
    return {**totals, "features": {c.name: asdict(c) for c in columns}}


def _performance(labelled: Any, limits: dict[str, float], out: list[Any]) -> dict[str, Any]:
    if labelled is None or labelled.num_rows == 0 or PREDICTION not in labelled.column_names:
        return {"labelled_rows": 0, "status": "no ground truth in the window"}
    truth = column_values(labelled, "label")
    predicted = column_values(labelled, PREDICTION)
    if predicted.dtype != object and set(np.unique(truth[~np.isnan(truth)]).tolist()) <= {0.0, 1.0}:
        keep = ~np.isnan(truth) & ~np.isnan(predicted)
        metrics = classification_metrics(truth[keep], predicted[keep])
        values: dict[str, Any] = {"labelled_rows": int(keep.sum()), "kind": "classification", **asdict(metrics)}
        _limit(out, "model-performance", "accuracy", metrics.accuracy, limits["min_accuracy"], ceiling=False)
        _limit(out, "model-performance", "auc", metrics.auc, limits["min_auc"], ceiling=False)
        return values
    if predicted.dtype == object:
        metrics_c = classification_metrics(truth.astype(str), predicted.astype(str))
        _limit(out, "model-performance", "accuracy", metrics_c.accuracy, limits["min_accuracy"], ceiling=False)
        return {"labelled_rows": metrics_c.rows, "kind": "classification", **asdict(metrics_c)}
    keep = ~np.isnan(truth) & ~np.isnan(predicted)
    regression = regression_metrics(truth[keep], predicted[keep])
    _limit(out, "model-performance", "rmse", regression.rmse, limits["max_rmse"], ceiling=True)
    return {"labelled_rows": regression.rows, "kind": "regression", **asdict(regression)}


def _endpoint(traffic: Any, start: float, end: float, limits: dict[str, float], out: list[Any]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    firsts = traffic
    if traffic.num_rows:
        mask = pc.equal(traffic["row"], 0)
        firsts = traffic if pc.all(mask).as_py() is not False else traffic.filter(mask)
    slot = firsts["slot"]
    slot = slot.unify_dictionaries() if pa.types.is_dictionary(slot.type) else slot
    slots = pc.dictionary_encode(slot).combine_chunks()
    stats = endpoint_performance(
        None,
        np.asarray(firsts["latency_ms"].to_numpy(zero_copy_only=False), dtype=np.float64),
        np.asarray(firsts["status"].to_numpy(zero_copy_only=False), dtype=np.int64),
        np.asarray(slots.indices.fill_null(-1).to_numpy(zero_copy_only=False)),
        slot_names=[str(name) for name in slots.dictionary.to_pylist()],
        start=start,
        end=end,
    )
    overall = stats["all"]
    _limit(out, "endpoint-performance", "error_rate", overall.error_rate, limits["max_error_rate"], ceiling=True)
    _limit(out, "endpoint-performance", "p95_ms", overall.p95_ms, limits["max_p95_ms"], ceiling=True)
    return {**asdict(overall), "slots": {k: asdict(v) for k, v in stats.items() if k != "all"}}


def _sample_columns(sample: Any) -> dict[str, np.ndarray]:
    return {} if sample is None else {str(c): sample[c].to_numpy() for c in sample.columns}


def evaluate(
    *,
    signal_names: list[str],
    profile: dict[str, Any] | None,
    sample: Any,
    window: WindowInputs,
    labelled: Any,
    thresholds: dict[str, float] | None,
    min_rows: int,
    start: float,
    end: float,
) -> Evaluation:
    """Every signal asked for over the window. `sample`: the reference sample as a pandas frame (or None);
    `window`: what `mlgate.services.monitoring.window` read of the store; `labelled`: its labelled rows (a
    pyarrow Table, or None); `start`, `end`: the window, in Unix seconds."""
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    reference = _sample_columns(sample)
    drift_limits = drift.Thresholds(
        wasserstein=limits["wasserstein"],
        jensen_shannon=limits["jensen_shannon"],
        psi=limits["psi"],
        dataset_share=limits["drift_share"],
    )
    values: dict[str, Any] = {}
    breaches: list[dict[str, Any]] = []
    if "endpoint-performance" in signal_names:
        values["endpoint-performance"] = _endpoint(window.traffic, start, end, limits, breaches)
    profiled = ("data-drift", "prediction-drift", "data-quality")
    if profile is None:
        for name in profiled:
            if name in signal_names:
                values[name] = {"status": drift.NO_REFERENCE}
    else:
        if "data-drift" in signal_names:
            current = feature_values(window.drift)
            report = drift.drift_report(profile, reference, current, thresholds=drift_limits, min_rows=min_rows)
            values["data-drift"] = _drift("data-drift", report, limits, breaches)
        if "prediction-drift" in signal_names:
            outputs = {}
            if PREDICTION in window.drift.column_names and profile.get("predictions"):
                outputs[str(profile["predictions"][0]["name"])] = column_values(window.drift, PREDICTION)
            report = drift.prediction_drift(profile, reference, outputs, thresholds=drift_limits, min_rows=min_rows)
            values["prediction-drift"] = _drift("prediction-drift", report, limits, breaches)
        if "data-quality" in signal_names:
            values["data-quality"] = _quality(window.quality or [], limits, breaches)
    if "model-performance" in signal_names:
        values["model-performance"] = _performance(labelled, limits, breaches)
    counted = [b for b in breaches if b.get("counted", True)]
    rows = window.answered
    verdict = NO_VERDICT if rows < min_rows else (BREACH if counted else CLEAN)
    return Evaluation(rows=rows, values=_json(values), breaches=_json(breaches), verdict=verdict)
