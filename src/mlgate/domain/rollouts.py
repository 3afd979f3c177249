"""Rollout rules as data: the slot a new version goes to, the traffic steps, and the SLO judgement of a step
from two snapshots of the serving host's cumulative per-slot counters.

A step is judged on the new slot's own requests in the step's window. With fewer than `min_requests`
there is nothing to judge yet: the bake goes on, up to `MAX_BAKE_FACTOR` times the bake time; a step
still short of requests then fails the rollout (the previous version keeps serving) rather than
promoting a version nobody has seen answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_BAKE_FACTOR = 3.0
BLUE, GREEN = "blue", "green"


class RolloutState(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    SHIFTING = "shifting"
    BAKING = "baking"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"


ACTIVE = (RolloutState.DEPLOYING.value, RolloutState.SHIFTING.value, RolloutState.BAKING.value)
FINISHED = (RolloutState.SUCCEEDED.value, RolloutState.FAILED.value, RolloutState.ROLLED_BACK.value)


def stable_slot(weights: dict[str, int]) -> str | None:
    """The slot carrying the traffic now (the most of it), or None for an endpoint with no deployment."""
    if not weights:
        return None
    return max(weights, key=lambda slot: (weights[slot], slot == BLUE))


def target_slot(stable: str | None) -> str:
    """Where the new version goes: `blue` first, then blue and green in turn (the idle one)."""
    return GREEN if stable == BLUE else BLUE


def traffic_steps(strategy: str, steps: list[int]) -> list[int]:
    """The new slot's share at each step: all at once for blue-green, the configured steps for canary."""
    return [100] if strategy == "blue-green" else list(steps)


@dataclass(frozen=True)
class Slo:
    max_error_rate: float
    p95_ms: float
    min_requests: int


@dataclass(frozen=True)
class Window:
    """What one slot did between two snapshots."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 3),
        }


def _slot(snapshot: dict[str, Any], endpoint: str, slot: str) -> dict[str, Any]:
    found = ((snapshot.get("endpoints") or {}).get(endpoint) or {}).get(slot)
    return found if isinstance(found, dict) else {}


def percentile(bounds: list[float], counts: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated inside its bucket; `counts` has one more entry
    than `bounds` (the overflow bucket, reported as the last bound)."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank = q * total
    running = 0
    for i, count in enumerate(counts):
        if count and running + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i > 0 else 0.0
            return low + (bounds[i] - low) * (rank - running) / count
        running += count
    return bounds[-1]


def window(before: dict[str, Any], after: dict[str, Any], *, endpoint: str, slot: str) -> Window:
    """The slot's requests, 5xx answers and p95 latency between two snapshots. A host that restarted
    in between (counters went down) counts from zero."""
    old, new = _slot(before, endpoint, slot), _slot(after, endpoint, slot)
    if int(new.get("requests", 0)) < int(old.get("requests", 0)):
        old = {}
    requests = int(new.get("requests", 0)) - int(old.get("requests", 0))
    errors = int(new.get("errors", 0)) - int(old.get("errors", 0))
    bounds = [float(b) for b in after.get("latency_buckets_s") or []]
    new_counts = [int(c) for c in new.get("latency_counts") or []]
    old_counts = [int(c) for c in old.get("latency_counts") or []] or [0] * len(new_counts)
    p95_ms = None
    if new_counts and len(old_counts) == len(new_counts) == len(bounds) + 1:
        diff = [max(0, a - b) for a, b in zip(new_counts, old_counts, strict=True)]
        p95 = percentile(bounds, diff, 0.95)
        p95_ms = None if p95 is None else p95 * 1000.0
    return Window(requests=requests, errors=errors, p95_ms=p95_ms)


def breach(observed: Window, slo: Slo, *, traffic: int, slot: str) -> str | None:
    """Why the step fails its SLO, naming the measured figure and the limit; None when it keeps them.
    Judged only with at least `min_requests` requests (the caller extends the bake otherwise)."""
    if observed.requests < slo.min_requests:
        return None
    if observed.error_rate > slo.max_error_rate:
        return (
            f"error rate {observed.error_rate:.2%} ({observed.errors} of {observed.requests} requests) on slot "
            f"'{slot}' at {traffic}% traffic exceeds the SLO max_error_rate {slo.max_error_rate:.2%}"
        )
    if observed.p95_ms is not None and observed.p95_ms > slo.p95_ms:
        return (
            f"p95 latency {observed.p95_ms:.1f} ms over {observed.requests} requests on slot '{slot}' at "
            f"{traffic}% traffic exceeds the SLO p95_ms {slo.p95_ms:g} ms"
        )
    return None


def too_few(observed: Window, slo: Slo, *, traffic: int, slot: str, seconds: float) -> str:
    return (
        f"only {observed.requests} requests reached slot '{slot}' at {traffic}% traffic in {seconds:.0f} s, "
        f"fewer than the SLO min_requests {slo.min_requests}: not judged, not promoted"
    )
