"""What the monitoring pages show, assembled from the monitoring service: a row per monitor (its last
verdict and firing alerts), and a monitor's results over time as charts against its effective thresholds.

A result's values are the signals' JSON as `mlgate.services.monitoring.evaluation` writes them; a value a window
did not have (too few rows, no ground truth yet) is a gap in its line, not a zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from mlgate.domain.monitors import thresholds
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.web import charts
from mlgate.services.monitoring import monitors
from mlgate.services.monitoring.monitors import AlertView, MonitorView, ResultView

FIRING = "firing"

# Per signal: (the value's key in the signal's results, its threshold, what the chart is called).
METRICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "model-performance": (
        ("accuracy", "min_accuracy", "accuracy (floor)"),
        ("auc", "min_auc", "AUC (floor)"),
        ("rmse", "max_rmse", "RMSE (ceiling)"),
    ),
    "endpoint-performance": (
        ("p95_ms", "max_p95_ms", "p95 latency, ms (ceiling)"),
        ("error_rate", "max_error_rate", "error rate, 5xx (ceiling)"),
    ),
}
DRIFT_SIGNALS = {"data-drift": "Data drift", "prediction-drift": "Prediction drift"}
TITLES = {"model-performance": "Model performance", "endpoint-performance": "Endpoint performance"}


@dataclass(frozen=True)
class MonitorRow:
    monitor: MonitorView
    last: ResultView | None
    firing: list[AlertView]


def monitor_rows(ctx: AppContext, env: str) -> list[MonitorRow]:
    """The environment's monitors, each with its latest result and its firing alerts."""
    firing = monitors.list_alerts(ctx.db, env, state=FIRING)
    rows = []
    for monitor in monitors.list_monitors(ctx.db, env):
        last = monitors.results(ctx.db, env, monitor.name, limit=1)
        rows.append(MonitorRow(monitor, last[0] if last else None, [a for a in firing if a.monitor == monitor.name]))
    return rows


@dataclass(frozen=True)
class Chart:
    caption: str
    feature: str | None  # the feature a drift chart is about
    metric: str
    svg: Markup


@dataclass(frozen=True)
class Section:
    signal: str
    title: str
    charts: list[Chart]
    note: str | None  # why there is nothing to draw


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _drift_section(signal: str, results: Sequence[ResultView], limits: dict[str, float]) -> Section:
    """One chart per feature (its kind's measure against the feature's threshold), then the share of
    drifted features against the dataset's threshold."""
    reports = [(r.at, r.values.get(signal) or {}) for r in results]
    latest: dict[str, dict[str, Any]] = {}
    for _, report in reports:
        latest.update(report.get("features") or {})  # the newest row of each feature wins
    drawn = []
    for feature, row in latest.items():
        measure = str(row.get("measure"))
        points = []
        for at, report in reports:
            found = (report.get("features") or {}).get(feature) or {}
            points.append((at, _number(found.get("value")) if found.get("measure") == measure else None))
        drawn.append(
            Chart(
                caption=f"{feature}: {measure}",
                feature=feature,
                metric=measure,
                svg=charts.lines(
                    f"{feature}: {measure} per window",
                    [charts.Line(measure, points)],
                    threshold=_number(row.get("threshold")),
                ),
            )
        )
    if not drawn:
        status = next((str(r["status"]) for _, r in reversed(reports) if r.get("status")), "no results yet")
        return Section(signal, DRIFT_SIGNALS[signal], [], f"Nothing to draw: {status}.")
    share = [(at, _number(report.get("share"))) for at, report in reports]
    drawn.append(
        Chart(
            caption="share of drifted features",
            feature=None,
            metric="drift_share",
            svg=charts.lines(
                "Share of drifted features per window",
                [charts.Line("drift share", share)],
                threshold=limits["drift_share"],
            ),
        )
    )
    return Section(signal, DRIFT_SIGNALS[signal], drawn, None)


def _metric_section(signal: str, results: Sequence[ResultView], limits: dict[str, float]) -> Section:
    drawn = []
    for key, limit, caption in METRICS[signal]:
        points = [(r.at, _number((r.values.get(signal) or {}).get(key))) for r in results]
        if any(value is not None for _, value in points):
            svg = charts.lines(f"{caption} per window", [charts.Line(key, points)], threshold=limits[limit])
            drawn.append(Chart(caption=caption, feature=None, metric=key, svg=svg))
    note = None
    if not drawn:
        status = next(
            (str(s) for r in reversed(results) if (s := (r.values.get(signal) or {}).get("status"))), "no values yet"
        )
        note = f"Nothing to draw: {status}."
    return Section(signal, TITLES[signal], drawn, note)


def sections(monitor: MonitorView, results: Sequence[ResultView]) -> list[Section]:
    """The charts of the monitor's signals, over `results` (oldest first)."""
    limits = thresholds(monitor.spec.thresholds)
    shown = []
    for signal in monitor.spec.signals:
        if signal in DRIFT_SIGNALS:
            shown.append(_drift_section(signal, results, limits))
        elif signal in METRICS:
            shown.append(_metric_section(signal, results, limits))
    return shown


def breach_text(breaches: Sequence[dict[str, Any]]) -> str:
    """The breaches that counted, as a line: `data-drift drift_share 0.667 (threshold 0.5)`."""
    shown = []
    for b in breaches:
        if not b.get("counted", True):
            continue
        value, limit = _number(b.get("value")), _number(b.get("threshold"))
        figures = f" {value:.4g} (threshold {limit:.4g})" if value is not None and limit is not None else ""
        shown.append(f"{b.get('signal')} {b.get('metric')}{figures}")
    return "; ".join(shown)
