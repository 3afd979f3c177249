"""Endpoint performance over a window: request rate, latency percentiles and error shares, overall and per slot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgate.domain.columns import FloatArray, IntArray, as_float


@dataclass(frozen=True)
class EndpointStats:
    """Traffic over a window: requests per second, latency percentiles (numpy's linear interpolation) and
    the shares of server errors (status >= 500) and client errors (4xx). None where there were no requests
    or the window has no length."""

    requests: int
    seconds: float
    requests_per_second: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float | None  # 5xx
    client_error_rate: float | None  # 4xx


def _endpoint_stats(latency: FloatArray, status: IntArray, seconds: float) -> EndpointStats:
    requests = int(latency.size)
    if requests == 0:
        return EndpointStats(0, seconds, 0.0 if seconds > 0 else None, None, None, None, None, None)
    p50, p95, p99 = (float(p) for p in np.percentile(latency, [50, 95, 99]))
    return EndpointStats(
        requests=requests,
        seconds=seconds,
        requests_per_second=requests / seconds if seconds > 0 else None,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        error_rate=float(np.mean(status >= 500)),
        client_error_rate=float(np.mean((status >= 400) & (status < 500))),
    )


def endpoint_performance(
    timestamps: np.ndarray | None,
    latency_ms: np.ndarray,
    status: np.ndarray,
    slot: np.ndarray | None = None,
    *,
    slot_names: list[str] | None = None,
    start: float | None = None,
    end: float | None = None,
) -> dict[str, EndpointStats]:
    """Endpoint performance over the window [start, end] (seconds; default: the first and last timestamps,
    which are then needed): key "all" for every request, then one key per slot. `slot`: each request's
    slot name, or, with `slot_names`, its index in that list (-1: none)."""
    latency = as_float(latency_ms)
    times = as_float(timestamps) if timestamps is not None else None
    codes = np.asarray(status, dtype=np.int64)
    if times is None and (start is None or end is None):
        raise ValueError("without timestamps, the window's start and end are needed")
    if latency.shape != codes.shape or (times is not None and times.shape != latency.shape):
        raise ValueError("timestamps, latency_ms and status must have the same length")
    times = times if times is not None else np.zeros(0)
    first = start if start is not None else (float(times.min()) if times.size else 0.0)
    last = end if end is not None else (float(times.max()) if times.size else 0.0)
    seconds = max(0.0, last - first)
    result = {"all": _endpoint_stats(latency, codes, seconds)}
    if slot is None:
        return result
    names: list[str] = list(slot_names) if slot_names is not None else []
    slots = np.asarray(slot)
    if slot_names is None:
        unique, indices = np.unique(slots.astype(str), return_inverse=True)
        names, slots = [str(n) for n in unique.tolist()], indices.reshape(slots.shape)
    if slots.shape != latency.shape:
        raise ValueError("slot must have the same length as latency_ms")
    for index, name in enumerate(names):
        chosen = slots == index
        count = int(np.count_nonzero(chosen))
        if count == slots.size:  # one slot answered everything: its figures are the endpoint's
            result[str(name)] = result["all"]
        elif count:
            result[str(name)] = _endpoint_stats(latency[chosen], codes[chosen], seconds)
    return result
