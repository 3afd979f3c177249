"""The retraining an alert starts, as a state machine: its states, the moves allowed between them, the check.

    none ──> starting ──> submitted ──> registered
      │          │            │
      └> skipped └> failed <──┘

`none`: nothing started (a `notify` monitor's alerts stay there); `starting`: claimed, its training job not
yet recorded (a crash here is resumed by taking up the job already submitted for the alert); `submitted`:
the job is recorded on the alert; `registered`: the job's model is a candidate and gate A is open;
`skipped`: inside the monitor's cooldown; `failed`: the note on the alert says why. The last three are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from mlgate.errors import ConflictError


class RetrainState(StrEnum):
    NONE = "none"
    STARTING = "starting"
    SUBMITTED = "submitted"
    REGISTERED = "registered"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return not TRANSITIONS[self]


TRANSITIONS: Mapping[RetrainState, frozenset[RetrainState]] = {
    RetrainState.NONE: frozenset({RetrainState.STARTING, RetrainState.SKIPPED}),
    RetrainState.STARTING: frozenset({RetrainState.SUBMITTED, RetrainState.FAILED}),
    RetrainState.SUBMITTED: frozenset({RetrainState.REGISTERED, RetrainState.FAILED}),
    RetrainState.REGISTERED: frozenset(),
    RetrainState.SKIPPED: frozenset(),
    RetrainState.FAILED: frozenset(),
}

# The states a retraining is carried on from (start, resume, register): every state that is not final.
PENDING = tuple(state for state in RetrainState if not state.final)


def transition(current: str, target: RetrainState) -> str:
    """The state to store when a retraining in `current` moves to `target`: `target`'s value, if the machine
    allows the move; otherwise a ConflictError that names both states."""
    try:
        source = RetrainState(current)
    except ValueError:
        raise ConflictError(
            f"retraining cannot move from unknown state '{current}' to '{target.value}'",
            details={"from": current, "to": target.value},
        ) from None
    if target not in TRANSITIONS[source]:
        onward = ", ".join(sorted(s.value for s in TRANSITIONS[source]))
        why = f"'{source.value}' moves only to {onward}" if onward else f"'{source.value}' is final"
        raise ConflictError(
            f"retraining cannot move from '{source.value}' to '{target.value}': {why}",
            details={"from": source.value, "to": target.value},
        )
    return target.value
