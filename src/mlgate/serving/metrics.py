"""Prometheus metrics of the serving host, rendered in the text exposition format by hand (no client lib:
the scoring path imports nothing heavy), and the per-slot counters behind the admin stats route that
rollouts watch. Every label set is bounded by the spec: endpoint and slot names (an endpoint is named only
once its key is checked, `unknown` before), the request kind and HTTP status; never a digest or a request
id, so a series does not appear with every deploy."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from mlgate.serving.shadow import ShadowStats

# Scoring latency in Prometheus: 0.5 ms to 30 s (a slow model or a long queue still lands in a bucket; the
# body deadline is 30 s by default). 0.25 s is a bound: the default latency SLO's p95.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Verifying, loading and warming up one model: a linear model in a tenth of a second, a large one minutes.
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Per-slot latency for rollouts' SLO checks: geometric bounds 20% apart from 0.1 ms to about a minute, so a
# p95 read from the difference of two snapshots is within 20% of the true one.
SLOT_LATENCY_BUCKETS = tuple(round(0.0001 * 1.2**i, 7) for i in range(74))


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        braced = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braced} {self.total:.6f}")
        lines.append(f"{name}_count{braced} {self.n}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.latency: dict[tuple[str, str], Histogram] = {}  # (endpoint, slot): LATENCY_BUCKETS
        self.slot_latency: dict[tuple[str, str], Histogram] = {}  # the same, finer, for the rollouts' stats
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.model_loads = Histogram(LOAD_BUCKETS)
        self.shadow = ShadowStats()  # a rollout's new slot compared with the stable one (mlgate.serving.shadow)

    def request(self, *, endpoint: str, slot: str, status: int, seconds: float, mirror: bool = False) -> None:
        self.requests[(endpoint, slot, "mirror" if mirror else "live", status)] += 1
        if not mirror:
            histogram = self.latency.get((endpoint, slot))
            if histogram is None:
                histogram = self.latency[(endpoint, slot)] = Histogram(LATENCY_BUCKETS)
            histogram.observe(seconds)
            by_slot = self.slot_latency.get((endpoint, slot))
            if by_slot is None:
                by_slot = self.slot_latency[(endpoint, slot)] = Histogram(SLOT_LATENCY_BUCKETS)
            by_slot.observe(seconds)

    def stats(self) -> dict[str, Any]:
        """Cumulative live counters per endpoint and slot: requests, 5xx answers and the latency histogram.
        A reader diffs two of these to get a window (the counters only grow while the host runs)."""
        requests: dict[tuple[str, str], int] = defaultdict(int)
        errors: dict[tuple[str, str], int] = defaultdict(int)
        for (endpoint, slot, kind, status), count in self.requests.items():
            if kind == "live" and slot:
                requests[(endpoint, slot)] += count
                if status >= 500:
                    errors[(endpoint, slot)] += count
        endpoints: dict[str, dict[str, Any]] = {}
        for key in sorted(set(requests) | set(self.slot_latency)):
            histogram = self.slot_latency.get(key)
            endpoints.setdefault(key[0], {})[key[1]] = {
                "requests": requests.get(key, 0),
                "errors": errors.get(key, 0),
                "latency_counts": list(histogram.counts) if histogram else [],
                "latency_sum_s": histogram.total if histogram else 0.0,
            }
        return {"latency_buckets_s": list(SLOT_LATENCY_BUCKETS), "endpoints": endpoints}

    def render(self) -> bytes:
        lines = [
            "# HELP mlgate_serving_requests_total Scoring requests by endpoint, slot, kind and HTTP status.",
            "# TYPE mlgate_serving_requests_total counter",
        ]
        for (endpoint, slot, kind, status), count in sorted(self.requests.items()):
            labels = f'endpoint="{_escape(endpoint)}",slot="{_escape(slot)}",kind="{kind}",status="{status}"'
            lines.append(f"mlgate_serving_requests_total{{{labels}}} {count}")
        lines += [
            "# HELP mlgate_serving_request_duration_seconds Live scoring latency in the host, by endpoint and slot.",
            "# TYPE mlgate_serving_request_duration_seconds histogram",
        ]
        for (endpoint, slot), histogram in sorted(self.latency.items()):
            labels = f'endpoint="{_escape(endpoint)}",slot="{_escape(slot)}"'
            lines += histogram.render("mlgate_serving_request_duration_seconds", labels)
        lines += [
            "# HELP mlgate_serving_batch_size Rows per model call after micro-batching.",
            "# TYPE mlgate_serving_batch_size histogram",
            *self.batch_sizes.render("mlgate_serving_batch_size", ""),
            "# HELP mlgate_serving_model_load_duration_seconds Time to verify, load and warm up each model loaded.",
            "# TYPE mlgate_serving_model_load_duration_seconds histogram",
            *self.model_loads.render("mlgate_serving_model_load_duration_seconds", ""),
        ]
        return ("\n".join(lines) + "\n").encode()


def render_recording(stats: dict[str, int]) -> bytes:
    """The request log's counters (`RequestLog.stats`): rows written for the monitoring store, dropped, queued."""
    lines = [
        "# HELP mlgate_serving_monitoring_rows_total Request rows for the monitoring store, by outcome.",
        "# TYPE mlgate_serving_monitoring_rows_total counter",
        f'mlgate_serving_monitoring_rows_total{{outcome="written"}} {stats["written_rows"]}',
        f'mlgate_serving_monitoring_rows_total{{outcome="dropped"}} {stats["dropped_rows"]}',
        "# HELP mlgate_serving_monitoring_pending_rows Rows queued, not yet written.",
        "# TYPE mlgate_serving_monitoring_pending_rows gauge",
        f"mlgate_serving_monitoring_pending_rows {stats['pending_rows']}",
    ]
    return ("\n".join(lines) + "\n").encode()
