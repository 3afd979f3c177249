"""Shadow comparison during a rollout: requests one slot answers, scored by the other slot too and compared.

The spec names the pair: the endpoint's `stable` slot and its `shadow` slot (the new one), with the
percentage of requests to shadow, the tolerance numbers are compared with and, optionally, the bin edges
float predictions are counted in (the stable version's baseline prediction bins; labels count as
themselves). A request the traffic split
sent to either slot of the pair, answered by that slot, is at that percentage also scored by the other
one after the caller's answer is on its way: in a background task, at most `MAX_PENDING` at once per
process (one more is not shadowed and is counted as dropped), never retried, its failures counted and
never seen by anyone. The two answers are compared row by row, and both counted in the same bins, under
the new slot's name. What disagreeing means, and how a rollout judges the counters, is
`mlgate.domain.rollout_quality`'s.

The model runs on the event loop (`mlgate.serving.batching`), so a shadow scoring shares it with live
requests; the percentage and `MAX_PENDING` bound what it can take.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlgate.serving.signature import to_matrix

if TYPE_CHECKING:
    from mlgate.serving.scoring import Parse
    from mlgate.serving.spec import ShadowSpec
    from mlgate.serving.state import Endpoint, Slot

log = logging.getLogger("mlgate.serving")

MAX_PENDING = 32  # shadow scorings in flight per process: beyond, a request is not shadowed (never queued)
MAX_LABELS = 64  # distinct labels counted per slot and side; the others together as OTHER
OTHER = "(other)"
SHADOW_TIMEOUT_S = 30.0  # a shadow scoring still unanswered then is counted as failed


@dataclass
class PairCounts:
    """Cumulative counters of one endpoint's new slot against its stable slot."""

    compared: int = 0  # rows
    disagreed: int = 0  # rows
    failed: int = 0  # rows the other slot could not score
    dropped: int = 0  # requests not shadowed: MAX_PENDING were in flight
    stable_counts: dict[str, int] = field(default_factory=dict)
    candidate_counts: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "disagreed": self.disagreed,
            "failed": self.failed,
            "dropped": self.dropped,
            "stable_counts": dict(self.stable_counts),
            "candidate_counts": dict(self.candidate_counts),
        }


def _columns(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1)


def disagreeing_rows(stable: np.ndarray, candidate: np.ndarray, tolerance: float) -> np.ndarray:
    """Per row, whether the two answers differ: labels by equality, numbers (either side a float) by more
    than `tolerance` times max(1, |stable|); any differing output makes the row differ."""
    s, c = _columns(np.asarray(stable)), _columns(np.asarray(candidate))
    if s.shape != c.shape:
        return np.ones(len(s), dtype=bool)
    numeric = s.dtype.kind in "biuf" and c.dtype.kind in "biuf"
    if numeric and "f" in (s.dtype.kind, c.dtype.kind):
        sf, cf = s.astype(np.float64), c.astype(np.float64)
        with np.errstate(invalid="ignore"):
            differ = np.abs(sf - cf) > tolerance * np.maximum(1.0, np.abs(sf))
        differ |= np.isnan(sf) != np.isnan(cf)
    else:
        differ = np.asarray(s != c, dtype=bool).reshape(s.shape)
    return np.asarray(differ.any(axis=1), dtype=bool)


def bin_keys(values: np.ndarray, edges: tuple[float, ...] | None) -> list[str] | None:
    """The bin of each row's first output: a label (integers, booleans, strings, integral floats) is its
    own bin; another float its index among `edges` (below the first: 0, at or past the last:
    len(edges)), or None without edges (no bins, no drift figure)."""
    first = _columns(np.asarray(values))[:, 0]
    if first.dtype.kind != "f":
        return [str(v) for v in first.tolist()]
    if np.all(np.isfinite(first) & (np.mod(first, 1) == 0)):
        return [str(int(v)) for v in first]
    if not edges:
        return None
    return [str(int(i)) for i in np.searchsorted(np.asarray(edges), first, side="right")]


def _count(into: dict[str, int], keys: list[str]) -> None:
    for key in keys:
        if key not in into and len(into) >= MAX_LABELS:
            key = OTHER
        into[key] = into.get(key, 0) + 1


class ShadowStats:
    """The counters of every (endpoint, new slot) pair of one process, or a host's total."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairCounts] = {}

    def pair(self, endpoint: str, slot: str) -> PairCounts:
        return self.pairs.setdefault((endpoint, slot), PairCounts())

    def compare(
        self,
        endpoint: str,
        slot: str,
        stable: np.ndarray,
        candidate: np.ndarray,
        *,
        tolerance: float,
        edges: tuple[float, ...] | None,
    ) -> None:
        counts = self.pair(endpoint, slot)
        if len(stable) != len(candidate):
            counts.failed += len(stable)
            return
        differ = disagreeing_rows(stable, candidate, tolerance)
        counts.compared += len(differ)
        counts.disagreed += int(differ.sum())
        for side, into in ((stable, counts.stable_counts), (candidate, counts.candidate_counts)):
            keys = bin_keys(side, edges)
            if keys is not None:
                _count(into, keys)

    def stats(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{endpoint: {new slot: counters}}, cumulative: a reader diffs two of these to get a window."""
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for (endpoint, slot), counts in sorted(self.pairs.items()):
            found.setdefault(endpoint, {})[slot] = counts.as_json()
        return found

    def add(self, raw: Any) -> None:
        """Add another process's `stats()` to these; a malformed one (another version's) adds nothing."""
        try:
            incoming = [
                (str(endpoint), str(slot), _parsed(body))
                for endpoint, slots in raw.items()
                for slot, body in slots.items()
            ]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed shadow counters: %s", exc)
            return
        for endpoint, slot, more in incoming:
            counts = self.pair(endpoint, slot)
            counts.compared += more.compared
            counts.disagreed += more.disagreed
            counts.failed += more.failed
            counts.dropped += more.dropped
            for into, added in (
                (counts.stable_counts, more.stable_counts),
                (counts.candidate_counts, more.candidate_counts),
            ):
                for key, n in added.items():
                    into[key] = into.get(key, 0) + n


def _parsed(body: Any) -> PairCounts:
    return PairCounts(
        compared=int(body["compared"]),
        disagreed=int(body["disagreed"]),
        failed=int(body["failed"]),
        dropped=int(body["dropped"]),
        stable_counts={str(k): int(v) for k, v in body["stable_counts"].items()},
        candidate_counts={str(k): int(v) for k, v in body["candidate_counts"].items()},
    )


class Shadow:
    """The shadow scorings of one process, counted into `stats`."""

    def __init__(self, stats: ShadowStats) -> None:
        self.stats = stats
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, endpoint: Endpoint | None, served: str, payload: Any, parse: Parse, out: np.ndarray) -> None:
        """Slot `served` answered the request with `out`: have the other slot of the pair score it too, at
        the spec's percentage, once the caller's answer is on its way. `endpoint` is the one in force now
        (the one the request was routed by may have been swapped out meanwhile)."""
        if endpoint is None:
            return
        spec, shadow = endpoint.spec, endpoint.spec.shadow
        if shadow is None or spec.stable is None or served not in (spec.stable, shadow.slot):
            return
        if random.random() * 100 >= shadow.percent:
            return
        if len(self._tasks) >= MAX_PENDING:
            self.stats.pair(spec.name, shadow.slot).dropped += 1
            return
        served_stable = served == spec.stable
        other = endpoint.slots.get(shadow.slot if served_stable else spec.stable)
        if other is None:
            return
        other.runtime.inflight += 1  # the model is not retired under the shadow scoring
        task = asyncio.get_running_loop().create_task(
            self._score(spec.name, shadow, other, served_stable, payload, parse, out)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score(
        self,
        name: str,
        shadow: ShadowSpec,
        other: Slot,
        served_stable: bool,
        payload: Any,
        parse: Parse,
        out: np.ndarray,
    ) -> None:
        runtime = other.runtime
        try:
            await asyncio.sleep(0)  # the caller's answer is sent first
            signature = runtime.model.signature
            rows = to_matrix(parse(payload, signature), signature)
            answer = await asyncio.wait_for(runtime.batcher.predict(rows), SHADOW_TIMEOUT_S)
        except Exception:  # the other slot's failure reaches no caller: it is counted
            self.stats.pair(name, shadow.slot).failed += len(out)
            return
        finally:
            runtime.inflight -= 1
        stable, candidate = (out, answer) if served_stable else (answer, out)
        try:
            self.stats.compare(name, shadow.slot, stable, candidate, tolerance=shadow.tolerance, edges=shadow.edges)
        except Exception:  # a comparison that fails must not end the task loudly: it is counted
            log.exception("comparing the answers of slots '%s' and '%s' failed", other.name, shadow.slot)
            self.stats.pair(name, shadow.slot).failed += len(out)
