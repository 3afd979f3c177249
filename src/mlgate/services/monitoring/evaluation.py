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
from mlgate.domain.data_quality import quality_report
from mlgate.domain.endpoint_performance import endpoint_performance
from mlgate.domain.model_performance import classification_metrics, regression_metrics
from mlgate.domain.monitors import DEFAULT_THRESHOLDS
from mlgate.domain.request_records import FEATURE_PREFIX, PREDICTION

BREACH, CLEAN, NO_VERDICT = "breach", "clean", "no-verdict"
# Drift is measured on at most this many rows of a window (a uniform sample beyond): the distances move by
# about 1/sqrt(rows), under 0.001 here, far below any threshold; counts (rows, nulls, errors, latency) are
# taken over every row.
DRIFT_ROWS = 1_000_000


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


def _column(table: Any, name: str) -> np.ndarray:
    """A column as numpy: float64 for numbers (NaN for nulls), objects otherwise."""
    import pyarrow as pa

    column = table[name]
    if pa.types.is_floating(column.type):  # nulls become NaN
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    values = column.to_pylist()
    if all(isinstance(v, int | float) or v is None for v in values):
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(values, dtype=object)


def _current(table: Any) -> dict[str, np.ndarray]:
    return {
        name[len(FEATURE_PREFIX) :]: _column(table, name)
        for name in table.column_names
        if name.startswith(FEATURE_PREFIX)
    }


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


def _quality(
    profile: dict[str, Any], current: dict[str, np.ndarray], limits: dict[str, float], out: list[Any]
) -> dict[str, Any]:
    columns = quality_report(profile, current)
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
    truth = _column(labelled, "label")
    predicted = _column(labelled, PREDICTION)
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


def _where(table: Any, mask: Any) -> Any:
    """The rows of `table` where `mask` holds; the table itself when it holds everywhere (no copy)."""
    import pyarrow.compute as pc

    return table if pc.all(mask).as_py() is not False else table.filter(mask)


def _endpoint(requests: Any, start: float, end: float, limits: dict[str, float], out: list[Any]) -> dict[str, Any]:
    import pyarrow.compute as pc

    columns = requests.select(["row", "ts", "latency_ms", "status", "slot"])
    firsts = _where(columns, pc.equal(columns["row"], 0)) if columns.num_rows else columns
    times = np.asarray(pc.cast(firsts["ts"], "int64").to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
    slots = pc.dictionary_encode(firsts["slot"]).combine_chunks()
    stats = endpoint_performance(
        times,
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


def _drift_sample(current: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The window's columns for the drift measures: all of them up to `DRIFT_ROWS` rows, else the same
    uniform sample of that many rows from each (seeded by the window's size, so a window gives the
    same figures each time it is evaluated)."""
    if rows <= DRIFT_ROWS:
        return current
    chosen = np.sort(np.random.default_rng(rows).choice(rows, DRIFT_ROWS, replace=False))
    return {name: values[chosen] for name, values in current.items()}


def _sample_columns(sample: Any) -> dict[str, np.ndarray]:
    return {} if sample is None else {str(c): sample[c].to_numpy() for c in sample.columns}


def evaluate(
    *,
    signal_names: list[str],
    profile: dict[str, Any] | None,
    sample: Any,
    requests: Any,
    labelled: Any,
    thresholds: dict[str, float] | None,
    min_rows: int,
    start: float,
    end: float,
) -> Evaluation:
    """Every signal asked for over the window. `sample`: the reference sample as a pandas frame (or None);
    `requests`, `labelled`: pyarrow tables from the monitoring store; `start`, `end`: the window, in Unix
    seconds."""
    import pyarrow.compute as pc

    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    answered = _where(requests, pc.less(requests["status"], 400)) if requests.num_rows else requests
    rows = answered.num_rows
    current = _current(answered)
    drifting = _drift_sample(current, rows)
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
        values["endpoint-performance"] = _endpoint(requests, start, end, limits, breaches)
    profiled = ("data-drift", "prediction-drift", "data-quality")
    if profile is None:
        for name in profiled:
            if name in signal_names:
                values[name] = {"status": drift.NO_REFERENCE}
    else:
        if "data-drift" in signal_names:
            report = drift.drift_report(profile, reference, drifting, thresholds=drift_limits, min_rows=min_rows)
            values["data-drift"] = _drift("data-drift", report, limits, breaches)
        if "prediction-drift" in signal_names:
            outputs = {}
            if PREDICTION in answered.column_names and profile.get("predictions"):
                outputs[str(profile["predictions"][0]["name"])] = _drift_sample(
                    {PREDICTION: _column(answered, PREDICTION)}, rows
                )[PREDICTION]
            report = drift.prediction_drift(profile, reference, outputs, thresholds=drift_limits, min_rows=min_rows)
            values["prediction-drift"] = _drift("prediction-drift", report, limits, breaches)
        if "data-quality" in signal_names:
            values["data-quality"] = _quality(profile, current, limits, breaches)
    if "model-performance" in signal_names:
        values["model-performance"] = _performance(labelled, limits, breaches)
    counted = [b for b in breaches if b.get("counted", True)]
    verdict = NO_VERDICT if rows < min_rows else (BREACH if counted else CLEAN)
    return Evaluation(rows=rows, values=_json(values), breaches=_json(breaches), verdict=verdict)
