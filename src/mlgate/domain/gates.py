"""Gates and the promotion state machine: who may decide, when a request is approved, what blocks it.

Pure rules, checked on the server before anything changes: the approver holds the gate's role in the
target environment, and held it when the request opened; no administrator, none of the model's authors
and not the request's opener decides; a decision is made with a token its holder created; `approvals` distinct
approvers complete the quorum; a rejection closes the request; no approval while a required check is
missing or has not passed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mlgate.domain.permissions import ALL_ENVIRONMENTS, Principal, Role

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


def check_person(principal: Principal) -> None:
    """Automation and administrators decide no gate, whatever roles they hold."""
    if principal.is_system:
        raise GateRefusal("forbidden", "automation decides nothing at a gate: a person must")
    if Role.ADMIN in principal.roles_in(None):
        raise GateRefusal(
            "forbidden",
            f"{principal.name} is an administrator: administrators administer, they never decide a gate",
            {"rule": "admins-never-decide"},
        )


def check_decider(
    gate: Gate, principal: Principal, *, authors: Collection[str], requester: str, opened_at: datetime
) -> None:
    """Who may approve or reject: the gate's role in the target environment, held since before the request
    opened; never an administrator, one of the model's authors or the request's opener."""
    check_person(principal)
    if gate.approver_role not in principal.roles_in(gate.target):
        raise GateRefusal(
            "forbidden",
            f"gate {gate.name} needs the role '{gate.approver_role}' in '{gate.target}'; {principal.name} has it not",
            {"role": gate.approver_role.value, "environment": gate.target},
        )
    if principal.name in authors:
        raise GateRefusal(
            "forbidden",
            f"{principal.name} is one of the model's authors: nobody approves their own model",
            {"rule": "separation-of-duties", "authors": sorted(authors)},
        )
    if principal.name == requester:
        raise GateRefusal(
            "forbidden",
            f"{principal.name} opened this request: its opener may not decide it",
            {"rule": "separation-of-duties"},
        )
    granted = principal.held_since(gate.approver_role, gate.target)
    if granted is None or granted > opened_at:
        raise GateRefusal(
            "forbidden",
            f"{principal.name} was given the role '{gate.approver_role}' in '{gate.target}' after this request "
            "opened: a role granted later does not count for it",
            {"rule": "role-granted-after-request", "granted_at": granted.isoformat() if granted else None},
        )


def check_credential(principal: Principal) -> None:
    """A decision needs a token its holder created: one made for them by someone else (at their account's
    creation, or a reset) signs them in, and lets them make their own, but decides nothing."""
    if principal.token_issued_by != principal.name:
        made_by = principal.token_issued_by or "someone else (before mlgate recorded who)"
        raise GateRefusal(
            "forbidden",
            f"{principal.name}'s token was created by {made_by}: a gate decision needs a token you created "
            "yourself (mlgate token create, signed in with this one)",
            {"rule": "own-token"},
        )


def approver_bindings(gates: Iterable[Gate], held: Iterable[tuple[Role, str]]) -> list[tuple[Role, str]]:
    """Those of the bindings `held` (role, environment or ALL_ENVIRONMENTS) that decide one of `gates`."""
    deciding = {(gate.approver_role, gate.target) for gate in gates}
    roles = {role for role, _ in deciding}
    return [(r, env) for r, env in held if (r, env) in deciding or (env == ALL_ENVIRONMENTS and r in roles)]


def check_open(state: RequestState, request_id: int) -> None:
    if state is not RequestState.OPEN:
        raise GateRefusal("conflict", f"request {request_id} is {state.value}, not open", {"state": state.value})


def blocking_checks(required: Iterable[str], results: Mapping[str, str]) -> dict[str, str]:
    """Required checks that are missing or have not passed, with their status ('missing' if never run)."""
    return {name: results.get(name, "missing") for name in required if results.get(name) != "passed"}


def quorum_reached(gate: Gate, approvers: Iterable[str]) -> bool:
    return len(set(approvers)) >= gate.approvals
