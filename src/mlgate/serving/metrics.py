"""Prometheus metrics of the serving host, rendered in the text exposition format by hand (no client lib),
and the per-slot counters behind the admin stats route that rollouts watch."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

from mlgate.serving.shadow import ShadowStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
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
        lines.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        lines.append(f"{name}_count{{{labels}}} {self.n}")
        return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.slot_latency: dict[tuple[str, str], Histogram] = {}
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.load_seconds: dict[str, float] = {}
        self.shadow = ShadowStats()  # a rollout's new slot compared with the stable one (mlgate.serving.shadow)

    def request(self, *, endpoint: str, slot: str, status: int, seconds: float, mirror: bool = False) -> None:
        self.requests[(endpoint, slot, "mirror" if mirror else "live", status)] += 1
        if not mirror:
            histogram = self.latency.get(endpoint)
            if histogram is None:
                histogram = self.latency[endpoint] = Histogram(LATENCY_BUCKETS)
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
            "# HELP mlgate_serving_request_duration_seconds Scoring latency inside the host.",
            "# TYPE mlgate_serving_request_duration_seconds histogram",
        ]
        for endpoint, histogram in sorted(self.latency.items()):
            lines += histogram.render("mlgate_serving_request_duration_seconds", f'endpoint="{_escape(endpoint)}"')
        lines += [
            "# HELP mlgate_serving_batch_size Rows per model call after micro-batching.",
            "# TYPE mlgate_serving_batch_size histogram",
            *self.batch_sizes.render("mlgate_serving_batch_size", ""),
            "# HELP mlgate_serving_model_load_seconds Time to verify, load and warm up a model, by digest.",
            "# TYPE mlgate_serving_model_load_seconds gauge",
        ]
        for digest, seconds in sorted(self.load_seconds.items()):
            lines.append(f'mlgate_serving_model_load_seconds{{digest="{_escape(digest)}"}} {seconds:.6f}')
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
