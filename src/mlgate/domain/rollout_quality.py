"""Rollout quality rules: a new slot's answers held against the stable slot's on the same requests, judged
from two snapshots of the serving host's cumulative shadow counters.

While a rollout is under way the serving host scores a share of the requests either slot of the pair
answers on the other slot too, off the caller's path (`mlgate.serving.shadow`), and keeps per endpoint and
new slot: rows compared, rows the two answered differently, rows the other slot could not score, requests
not shadowed because the shadow queue was full, and both slots' predictions on those rows counted in the
same bins. A step's window is the difference of two snapshots, as for the SLO counters
(`mlgate.domain.rollouts`).

- Disagreement rate: rows answered differently over rows compared. Labels (integers, booleans, strings)
  differ when they are not equal; numbers when they lie further apart than the policy's `tolerance` times
  the larger of 1 and the stable answer's magnitude (absolute below 1, relative above); a row with several
  outputs differs when any of them does.
- Prediction drift: the population stability index (PSI) of the new slot's predictions against the
  stable slot's over the same rows, on the bins the host counted them in: a label is its own bin, a
  float falls in the stable version's baseline prediction bins; float predictions without baseline bins
  have no drift figure.
- Judged only with at least `min_compared` rows compared in the window: too few comparisons extend the
  bake (up to the SLO's limit), then leave quality unjudged rather than fail a version whose SLOs held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.domain.distances import psi


@dataclass(frozen=True)
class Quality:
    max_disagreement: float
    max_prediction_drift: float
    min_compared: int


@dataclass(frozen=True)
class QualityWindow:
    """What the shadow comparison of one slot saw between two snapshots."""

    compared: int
    disagreed: int
    failed: int
    dropped: int
    drift: float | None

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreed / self.compared if self.compared else None

    def as_json(self) -> dict[str, Any]:
        rate = self.disagreement_rate
        return {
            "compared": self.compared,
            "disagreed": self.disagreed,
            "disagreement_rate": None if rate is None else round(rate, 6),
            "prediction_drift": None if self.drift is None else round(self.drift, 6),
            "shadow_failed": self.failed,
            "shadow_dropped": self.dropped,
        }


NOTHING_COMPARED = QualityWindow(0, 0, 0, 0, None)


def _pair(snapshot: dict[str, Any], endpoint: str, slot: str) -> dict[str, Any]:
    found = ((snapshot.get("shadow") or {}).get(endpoint) or {}).get(slot)
    return found if isinstance(found, dict) else {}


def _counts(raw: Any) -> dict[str, int]:
    return {str(key): int(value) for key, value in raw.items()} if isinstance(raw, dict) else {}


def _diff(new: dict[str, int], old: dict[str, int]) -> dict[str, int]:
    return {key: max(0, count - old.get(key, 0)) for key, count in new.items()}


def prediction_drift(stable: dict[str, int], candidate: dict[str, int]) -> float | None:
    """PSI of the candidate's bin counts against the stable slot's over the union of their bins; None
    when either side counted nothing."""
    bins = sorted(set(stable) | set(candidate))
    reference = np.array([stable.get(b, 0) for b in bins], dtype=np.float64)
    current = np.array([candidate.get(b, 0) for b in bins], dtype=np.float64)
    if reference.sum() <= 0 or current.sum() <= 0:
        return None
    return psi(reference, current)


def quality_window(before: dict[str, Any], after: dict[str, Any], *, endpoint: str, slot: str) -> QualityWindow:
    """The slot's shadow comparison between two snapshots. A host that restarted in between (counters
    went down) counts from zero."""
    old, new = _pair(before, endpoint, slot), _pair(after, endpoint, slot)
    if int(new.get("compared", 0)) < int(old.get("compared", 0)):
        old = {}

    def grown(key: str) -> int:
        return max(0, int(new.get(key, 0)) - int(old.get(key, 0)))

    stable = _diff(_counts(new.get("stable_counts")), _counts(old.get("stable_counts")))
    candidate = _diff(_counts(new.get("candidate_counts")), _counts(old.get("candidate_counts")))
    drift = prediction_drift(stable, candidate)
    return QualityWindow(grown("compared"), grown("disagreed"), grown("failed"), grown("dropped"), drift)


def quality_breach(observed: QualityWindow, quality: Quality, *, traffic: int, slot: str, stable: str) -> str | None:
    """Why the step fails on quality, naming the measured figure and the limit; None when it keeps the
    limits or too few rows were compared to judge."""
    if observed.compared < quality.min_compared:
        return None
    where = f"on slot '{slot}' at {traffic}% traffic"
    rate = observed.disagreement_rate
    if rate is not None and rate > quality.max_disagreement:
        return (
            f"disagreement rate {rate:.2%} ({observed.disagreed} of {observed.compared} rows answered unlike "
            f"slot '{stable}') {where} exceeds the quality max_disagreement {quality.max_disagreement:.2%}"
        )
    if observed.drift is not None and observed.drift > quality.max_prediction_drift:
        return (
            f"prediction drift (PSI) {observed.drift:.3f} against slot '{stable}' over {observed.compared} rows "
            f"{where} exceeds the quality max_prediction_drift {quality.max_prediction_drift:g}"
        )
    return None
