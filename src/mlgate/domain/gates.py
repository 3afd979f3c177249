"""Gates and the promotion state machine: who may decide, when a request is approved, what blocks it.

Pure rules, checked on the server before anything changes: the approver holds the gate's role in the
target environment; neither the model's author nor the request's opener decides; `approvals` distinct
approvers complete the quorum; a rejection closes the request; no approval while a required check is
missing or has not passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from mlgate.domain.permissions import Principal, Role

DEFAULT_EXPIRY = timedelta(hours=72)
GATE_B_CHECKS = ("lint", "unit-tests", "model-validation", "endpoint-tests")


class RequestState(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def closed(self) -> bool:
        return self in (RequestState.PROMOTED, RequestState.REJECTED, RequestState.EXPIRED, RequestState.FAILED)


@dataclass(frozen=True)
class Gate:
    name: str
    source: str
    target: str
    approver_role: Role
    approvals: int = 1
    checks: tuple[str, ...] = ()
    expiry: timedelta = DEFAULT_EXPIRY
    auto_request: bool = True


class GateRefusal(Exception):
    """Why a decision is refused: `kind` is 'forbidden' (who) or 'conflict' (the request's state)."""

    def __init__(self, kind: str, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details or {}


def check_decider(gate: Gate, principal: Principal, *, author: str, requester: str) -> None:
    """Who may approve or reject: the gate's role in the target environment, and not an interested party."""
    if principal.is_system:
        raise GateRefusal("forbidden", "automation decides nothing at a gate: a person must")
    if gate.approver_role not in principal.roles_in(gate.target):
        raise GateRefusal(
            "forbidden",
            f"gate {gate.name} needs the role '{gate.approver_role}' in '{gate.target}'; {principal.name} has it not",
            {"role": gate.approver_role.value, "environment": gate.target},
        )
    if principal.name == author:
        raise GateRefusal(
            "forbidden",
            f"{principal.name} is the model's author: nobody approves their own model",
            {"rule": "separation-of-duties"},
        )
    if principal.name == requester:
        raise GateRefusal(
            "forbidden",
            f"{principal.name} opened this request: its opener may not decide it",
            {"rule": "separation-of-duties"},
        )


def check_open(state: RequestState, request_id: int) -> None:
    if state is not RequestState.OPEN:
        raise GateRefusal("conflict", f"request {request_id} is {state.value}, not open", {"state": state.value})


def blocking_checks(required: Iterable[str], results: Mapping[str, str]) -> dict[str, str]:
    """Required checks that are missing or have not passed, with their status ('missing' if never run)."""
    return {name: results.get(name, "missing") for name in required if results.get(name) != "passed"}


def quorum_reached(gate: Gate, approvers: Iterable[str]) -> bool:
    return len(set(approvers)) >= gate.approvals
