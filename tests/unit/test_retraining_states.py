"""The retraining state machine: the moves an alert's retraining may make, and the refusal of every other."""

from __future__ import annotations

import pytest

from mlgate.domain.retraining import PENDING, RetrainState, transition
from mlgate.errors import ConflictError

S = RetrainState

# Written out here rather than read from the module: the test states the machine it expects.
ALLOWED = {
    (S.NONE, S.STARTING),
    (S.NONE, S.SKIPPED),
    (S.STARTING, S.SUBMITTED),
    (S.STARTING, S.FAILED),
    (S.SUBMITTED, S.REGISTERED),
    (S.SUBMITTED, S.FAILED),
}
REFUSED = sorted((current, target) for current in S for target in S if (current, target) not in ALLOWED)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_a_legal_move_gives_the_state_to_store(current: RetrainState, target: RetrainState) -> None:
    stored = transition(current.value, target)
    assert stored == target.value
    assert type(stored) is str  # what the column holds: the plain value, not the enum member


@pytest.mark.parametrize(("current", "target"), REFUSED)
def test_an_illegal_move_is_refused_naming_both_states(current: RetrainState, target: RetrainState) -> None:
    with pytest.raises(ConflictError) as refused:
        transition(current.value, target)
    assert f"from '{current.value}' to '{target.value}'" in refused.value.message
    assert refused.value.details == {"from": current.value, "to": target.value}


def test_a_final_state_says_so_and_the_others_are_carried_on() -> None:
    assert {state for state in S if state.final} == {S.REGISTERED, S.SKIPPED, S.FAILED}
    assert PENDING == (S.NONE, S.STARTING, S.SUBMITTED)
    with pytest.raises(ConflictError, match="'registered' is final"):
        transition("registered", S.FAILED)
    with pytest.raises(ConflictError, match="'none' moves only to skipped, starting"):
        transition("none", S.REGISTERED)


def test_an_unknown_stored_state_is_refused() -> None:
    with pytest.raises(ConflictError, match="unknown state 'bogus' to 'failed'"):
        transition("bogus", S.FAILED)
