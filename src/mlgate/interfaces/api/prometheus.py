"""The control plane's `GET /metrics`: Prometheus families built from the control database at each scrape,
for the holder of the metrics token only.

The families come from `services.telemetry` through a `prometheus_client` collector registered in a
registry of this app's own (never the process-global one), beside the process' own figures
(`process_*`, `python_info`). The route sits at the root, where Prometheus scrapes by default, as on the
serving hosts, and it is not an API route: it takes the metrics token a scrape config holds
(`serving.metrics_token_env`, the same token as the hosts'), never an mlgate token, which expires and
reaches one person's environments. The server keeps only the token's SHA-256 and compares in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator

from anyio import to_thread
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import mlgate
from mlgate.adapters.sql.database import Database
from mlgate.domain.clock import Clock
from mlgate.domain.tokens import token_hash
from mlgate.errors import AuthenticationError
from mlgate.interfaces.api.deps import bearer_token
from mlgate.services import telemetry
from mlgate.services.monitoring.evaluation import BREACH, CLEAN, NO_VERDICT
from mlgate.services.telemetry import Counts, Durations, Figures, MonitorFigures

PATH = "/metrics"
VERDICTS = (BREACH, CLEAN, NO_VERDICT)
# The text format every Prometheus reads (2.x and 3.x), as the serving hosts answer; prometheus_client's
# "latest" names 1.0.0, which older servers do not know. The bodies are the same for names like ours.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ControlPlaneCollector(Collector):
    """Reads the figures once per scrape and yields them as metric families."""

    def __init__(self, db: Database, clock: Clock, *, gates: Iterable[str] = ()) -> None:
        self.db = db
        self.clock = clock
        self.gates = tuple(gates)

    def collect(self) -> Iterator[Metric]:
        figures = telemetry.read(self.db, now=self.clock.now(), gates=self.gates)
        info = GaugeMetricFamily(
            "mlgate_build_info", "The mlgate version serving this control plane.", labels=["version"]
        )
        info.add_metric([mlgate.__version__], 1)
        yield info
        yield from monitor_families(figures.monitors)
        yield from notification_families(figures)
        yield from promotion_families(figures)
        yield from job_families(figures)
        yield from rollout_families(figures)


def _gauge(name: str, documentation: str, labels: list[str], counts: Counts) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family


def _histogram(name: str, documentation: str, labels: list[str], durations: Durations) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, series in sorted(durations.series.items()):
        buckets = [(f"{bound:g}", float(n)) for bound, n in zip(durations.bounds, series.cumulative, strict=True)]
        family.add_metric(list(values), [*buckets, ("+Inf", float(series.count))], series.total)
    return family


def monitor_families(monitors: Iterable[MonitorFigures]) -> Iterator[Metric]:
    where = ["environment", "monitor"]
    values = GaugeMetricFamily(
        "mlgate_monitor_signal_value",
        "The latest window's values of each monitor's signals, per feature (feature=\"\": the whole window).",
        labels=[*where, "signal", "metric", "feature"],
    )
    firing = GaugeMetricFamily(
        "mlgate_monitor_alert_firing", "1 while the monitor's alert is firing.", labels=[*where, "endpoint"]
    )
    alerts = CounterMetricFamily("mlgate_monitor_alerts", "Alerts the monitor has opened.", labels=where)
    verdict = GaugeMetricFamily(
        "mlgate_monitor_verdict", "1 for the latest window's verdict, 0 for the others.", labels=[*where, "verdict"]
    )
    last_run = GaugeMetricFamily(
        "mlgate_monitor_last_run_timestamp_seconds", "When the monitor last ran (Unix time).", labels=where
    )
    for monitor in monitors:
        key = [monitor.environment, monitor.name]
        for value in monitor.values:
            values.add_metric([*key, value.signal, value.metric, value.feature], value.value)
        firing.add_metric([*key, monitor.endpoint], int(monitor.firing))
        alerts.add_metric(key, monitor.alerts)
        if monitor.verdict is not None:
            for name in VERDICTS:
                verdict.add_metric([*key, name], int(monitor.verdict == name))
        if monitor.last_run_at is not None:
            last_run.add_metric(key, monitor.last_run_at.timestamp())
    yield from (values, firing, alerts, verdict, last_run)


def notification_families(figures: Figures) -> Iterator[Metric]:
    yield _gauge(
        "mlgate_notifications",
        "Messages in the outbox by channel and state (pending: not delivered yet; failed: given up).",
        ["channel", "state"],
        figures.notifications,
    )
    oldest = GaugeMetricFamily(
        "mlgate_notification_oldest_pending_age_seconds",
        "Age of the oldest message of the channel not delivered yet (no series: none waiting).",
        labels=["channel"],
    )
    for channel, age in sorted(figures.oldest_pending_s.items()):
        oldest.add_metric([channel], age)
    yield oldest


def promotion_families(figures: Figures) -> Iterator[Metric]:
    yield _gauge(
        "mlgate_promotion_requests", "Promotion requests by gate and state.", ["gate", "state"], figures.requests
    )
    yield _histogram(
        "mlgate_promotion_request_decision_seconds",
        "Time from a request's opening to its decision (approved, rejected or expired), by gate.",
        ["gate", "decision"],
        figures.decisions,
    )
    yield _histogram(
        "mlgate_promotion_duration_seconds",
        "Time from a request's approval to its version promoted into the target, by gate.",
        ["gate"],
        figures.promotions,
    )


def job_families(figures: Figures) -> Iterator[Metric]:
    labels = ["environment", "kind", "state"]
    yield _gauge("mlgate_jobs", "Jobs by environment, kind and state.", labels, figures.jobs)
    yield _histogram(
        "mlgate_job_duration_seconds", "Run time of finished jobs, by outcome.", labels, figures.job_durations
    )


def rollout_families(figures: Figures) -> Iterator[Metric]:
    labels = ["environment", "endpoint", "state"]
    yield _gauge("mlgate_rollouts", "Rollouts by environment, endpoint and state.", labels, figures.rollouts)
    yield _histogram(
        "mlgate_rollout_duration_seconds",
        "Time from a rollout's start to its outcome (succeeded, failed, rolled-back).",
        labels,
        figures.rollout_durations,
    )


class ScrapeRoute(Route):
    """`GET /metrics`, for Prometheus with the metrics token (not an API route: no mlgate token reaches it)."""


def _authorize(request: Request, expected: str | None) -> None:
    if expected is None:
        raise AuthenticationError(
            "this server has no metrics token: set the variable serving.metrics_token_env names "
            "(MLGATE_METRICS_TOKEN by default) before starting it"
        )
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(token_hash(token), expected):
        raise AuthenticationError("missing or wrong metrics token: send 'Authorization: Bearer <metrics token>'")


def scrape_route(db: Database, clock: Clock, *, expected_hash: str | None, gates: Iterable[str] = ()) -> ScrapeRoute:
    """The route, over its own registry; `expected_hash`: the metrics token's SHA-256 (None: answers no one);
    `gates`: the policy's gate names."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(db, clock, gates=gates))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)

    async def metrics(request: Request) -> Response:
        _authorize(request, expected_hash)
        body = await to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE)

    return ScrapeRoute(PATH, metrics, methods=["GET"], include_in_schema=False)
