"""What served in an environment at a moment, and who let it in, replayed from the audit log alone.

Every release event (subject `endpoint:NAME`: `endpoint.create`, `endpoint.deploy`, `endpoint.traffic`,
`endpoint.rollback`, `endpoint.rotate-key`, `rollout.create`, `rollout.succeeded`, `rollout.failed`)
carries its endpoint's whole slot table after it, `{"endpoint": NAME, "slots": [{"slot", "model",
"version", "weight"}, ...]}`: the newest one at or before the moment is what served. Who let a version
in comes from the gate's own events in that environment: `request.open` (the request's way, `from` and
`to`), `request.approve` (its approver, subject `request:N`) and `model.promote` (subject
`model:NAME:VERSION`, payload `request`), which ties the number the environment gave the version to the
request its approvers decided. Events without a slot table (written before they carried one, or before
payloads were kept) are passed over. Pure: no database, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlgate.errors import ValidationError

RELEASE_SUBJECT = "endpoint:"
OPEN, APPROVE, PROMOTE = "request.open", "request.approve", "model.promote"
GATE_ACTIONS = (OPEN, APPROVE, PROMOTE)


def as_utc(at: datetime) -> datetime:
    """A naive time is UTC (as every stored time is); an aware one is converted to UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time (`Z` or an offset; none: UTC), as a UTC time; refuses anything else, naming it."""
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except (ValueError, OverflowError):  # OverflowError: an offset that takes it out of the years 1 to 9999
        raise ValidationError(
            f"invalid time '{text}': expected an ISO 8601 time such as 2025-03-01T14:30:00Z "
            "(a time without an offset is taken as UTC)",
            details={"time": text},
        ) from None


@dataclass(frozen=True)
class AuditRecord:
    """The fields of one audit event that the replay reads."""

    seq: int
    at: datetime
    actor: str
    action: str
    environment: str | None
    subject: str | None
    payload: Any


@dataclass(frozen=True)
class Approval:
    approver: str
    at: datetime
    gate: str
    request: int
    comment: str | None = None


@dataclass(frozen=True)
class SlotServing:
    endpoint: str
    slot: str
    model: str
    version: int
    weight: int
    approvals: tuple[Approval, ...] = ()

    @property
    def approved_by(self) -> list[str]:
        return [a.approver for a in self.approvals]


@dataclass(frozen=True)
class EndpointAt:
    """An endpoint's slot table in force, and the event that set it."""

    endpoint: str
    slots: tuple[SlotServing, ...]
    seq: int
    changed_at: datetime
    changed_by: str
    action: str


@dataclass(frozen=True)
class ServingAt:
    environment: str
    at: datetime
    endpoints: tuple[EndpointAt, ...]
    last_seq: int | None  # the last event replayed (at or before `at`); None: there was none

    @property
    def slots(self) -> list[SlotServing]:
        return [slot for endpoint in self.endpoints for slot in endpoint.slots]


def _request_id(subject: str | None) -> int | None:
    prefix, _, number = (subject or "").partition(":")
    return int(number) if prefix == "request" and number.isdigit() else None


def _model_version(subject: str | None) -> tuple[str, int] | None:
    rest = (subject or "").removeprefix("model:")
    name, _, number = rest.rpartition(":")
    if rest == subject or not name or not number.isdigit():
        return None
    return name, int(number)


def _slot_table(payload: Any) -> tuple[str, list[tuple[str, str, int, int]]] | None:
    """The payload's endpoint and slot table, if it carries a well-formed one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("endpoint"), str):
        return None
    raw = payload.get("slots")
    if not isinstance(raw, list):
        return None
    rows = []
    for entry in raw:
        if not isinstance(entry, dict):
            return None
        slot, model, version, weight = (entry.get(k) for k in ("slot", "model", "version", "weight"))
        if not (isinstance(slot, str) and isinstance(model, str) and isinstance(version, int)):
            return None
        if not isinstance(weight, int):
            return None
        rows.append((slot, model, version, weight))
    return payload["endpoint"], rows


@dataclass
class _Fold:
    environment: str
    gate: str | None
    tables: dict[str, tuple[AuditRecord, list[tuple[str, str, int, int]]]] = field(default_factory=dict)
    ways: dict[int, str] = field(default_factory=dict)  # request -> "from -> to"
    approvals: dict[int, list[Approval]] = field(default_factory=dict)
    requests: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, version) -> request
    last_seq: int | None = None

    def apply(self, event: AuditRecord) -> None:
        self.last_seq = event.seq
        payload = event.payload if isinstance(event.payload, dict) else {}
        if (event.subject or "").startswith(RELEASE_SUBJECT):
            table = _slot_table(payload)
            if table is not None:
                self.tables[table[0]] = (event, table[1])
        elif event.action == OPEN and (request := _request_id(event.subject)) is not None:
            self.ways[request] = f"{payload.get('from', '?')} -> {payload.get('to', self.environment)}"
        elif event.action == APPROVE and (request := _request_id(event.subject)) is not None:
            gate = self.gate or self.ways.get(request) or f"into {self.environment}"
            comment = payload.get("comment")
            approval = Approval(
                approver=event.actor,
                at=as_utc(event.at),
                gate=gate,
                request=request,
                comment=comment if isinstance(comment, str) else None,
            )
            self.approvals.setdefault(request, []).append(approval)
        elif event.action == PROMOTE and (version := _model_version(event.subject)) is not None:
            request = payload.get("request")
            if isinstance(request, int):
                self.requests[version] = request

    def _approvals_of(self, model: str, version: int) -> tuple[Approval, ...]:
        request = self.requests.get((model, version))
        return tuple(self.approvals.get(request, ())) if request is not None else ()

    def result(self, at: datetime) -> ServingAt:
        endpoints = []
        for name in sorted(self.tables):
            event, rows = self.tables[name]
            slots = tuple(
                SlotServing(name, slot, model, version, weight, self._approvals_of(model, version))
                for slot, model, version, weight in rows
            )
            endpoints.append(EndpointAt(name, slots, event.seq, as_utc(event.at), event.actor, event.action))
        return ServingAt(self.environment, at, tuple(endpoints), self.last_seq)


def replay(events: Iterable[AuditRecord], *, environment: str, at: datetime, gate: str | None = None) -> ServingAt:
    """Fold `events` (in sequence order) of `environment` at or before `at` into what served there then.
    `gate`: the name of the gate into the environment, for the approvals (none: the request's way)."""
    moment = as_utc(at)
    fold = _Fold(environment, gate)
    for event in events:
        if event.environment == environment and as_utc(event.at) <= moment:
            fold.apply(event)
    return fold.result(moment)
