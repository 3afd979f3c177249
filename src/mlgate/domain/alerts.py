"""Alert hysteresis: an alert fires after K consecutive breaching windows and resolves after K clean ones.

Pure: the state goes in, the next state and what changed come out. A window without a verdict (fewer
rows than the monitor's minimum) changes nothing, so quiet hours neither fire nor resolve an alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Change(StrEnum):
    FIRE = "fire"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Hysteresis:
    """Where a monitor stands: whether its alert is firing, and the current runs of windows."""

    firing: bool = False
    breaching: int = 0  # consecutive breaching windows, up to now
    clean: int = 0  # consecutive clean windows, up to now


def step(current: Hysteresis, breached: bool | None, *, k: int) -> tuple[Hysteresis, Change | None]:
    """The state after one more window (`breached` None: no verdict), and FIRE or RESOLVE when it changes."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if breached is None:
        return current, None
    if breached:
        after = Hysteresis(firing=current.firing, breaching=current.breaching + 1, clean=0)
        if not current.firing and after.breaching >= k:
            return Hysteresis(firing=True, breaching=after.breaching, clean=0), Change.FIRE
        return after, None
    after = Hysteresis(firing=current.firing, breaching=0, clean=current.clean + 1)
    if current.firing and after.clean >= k:
        return Hysteresis(firing=False, breaching=0, clean=after.clean), Change.RESOLVE
    return after, None


def replay(verdicts: list[bool | None], *, k: int, start: Hysteresis | None = None) -> tuple[Hysteresis, list[Change]]:
    """Run `step` over a sequence of verdicts, oldest first; the final state and every change on the way."""
    state = start or Hysteresis()
    changes: list[Change] = []
    for verdict in verdicts:
        state, change = step(state, verdict, k=k)
        if change is not None:
            changes.append(change)
    return state, changes
