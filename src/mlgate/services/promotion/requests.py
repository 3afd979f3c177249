"""Promotion requests: opening one (by hand or on registration), deciding it at its gate, expiring it.

Every rule is enforced here, on the server, inside one write transaction per step, so that
concurrent approvals cannot both complete a quorum. An approved request is then carried out by the
promotion worker (`services.promotion.copying`), acting as `system`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import (
    Decision,
    ModelVersion,
    PromotionRequest,
    utcnow,
)
from mlgate.adapters.sql.queries import as_utc, model_version
from mlgate.config import Settings
from mlgate.domain.events import RequestApproved
from mlgate.domain.gates import (
    Gate,
    GateRefusal,
    RequestState,
    blocking_checks,
    check_credential,
    check_decider,
    check_open,
    quorum_reached,
)
from mlgate.domain.permissions import SYSTEM, Principal
from mlgate.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from mlgate.services import audit
from mlgate.services.events import NO_EVENTS, Publisher
from mlgate.services.notifications import outbox
from mlgate.services.promotion import evidence
from mlgate.services.registration import authors

ACTIVE = (RequestState.OPEN.value, RequestState.APPROVED.value, RequestState.PROMOTING.value)


@dataclass(frozen=True)
class DecisionView:
    actor: str
    decision: str
    comment: str | None
    at: datetime


@dataclass(frozen=True)
class RequestView:
    id: int
    gate: str
    model_name: str
    source_env: str
    source_version: int
    target_env: str
    state: str
    requested_by: str
    author: str
    authors: list[dict[str, Any]]  # [{"name", "as": [what they did]}]: none of them decides
    approver_role: str
    required_approvals: int
    required_checks: list[str]
    evidence: dict[str, Any]
    decisions: list[DecisionView]
    created_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    target_version: int | None
    failure: str | None


def view(row: PromotionRequest) -> RequestView:
    return RequestView(
        id=row.id,
        gate=row.gate,
        model_name=row.model_name,
        source_env=row.source_env,
        source_version=row.source_version,
        target_env=row.target_env,
        state=row.state,
        requested_by=row.requested_by,
        author=row.author,
        authors=row.authors if row.authors is not None else [{"name": row.author, "as": ["the model's author"]}],
        approver_role=row.approver_role,
        required_approvals=row.required_approvals,
        required_checks=list(row.required_checks),
        evidence=dict(row.evidence),
        decisions=[DecisionView(d.actor, d.decision, d.comment, d.at) for d in row.decisions],
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        target_version=row.target_version,
        failure=row.failure,
    )


def _refused(exc: GateRefusal) -> Exception:
    if exc.kind == "conflict":
        return ConflictError(exc.message, details=dict(exc.details))
    return PermissionDeniedError(exc.message, details=dict(exc.details))


# -- opening -----------------------------------------------------------------------------------------


def _gate_for(settings: Settings, source: str, target: str | None) -> Gate:
    env = settings.environment(source)
    if target is None:
        gate = settings.gate_from(source)
        if gate is None:
            raise ValidationError(f"no gate leads out of '{source}': it is the last environment")
        return gate
    settings.environment(target)
    gate = settings.gate_into(target) if any(g.target == target for g in settings.gates) else None
    if gate is None or gate.source != env.name:
        expected = settings.gate_from(source)
        hint = f"; from '{source}' the next is '{expected.target}'" if expected else ""
        raise ValidationError(
            f"'{target}' is not the next environment after '{source}'{hint}",
            details={"from": source, "to": target},
        )
    return gate


def open_request(
    db: Database,
    settings: Settings,
    *,
    actor: str,
    source: str,
    name: str,
    version: int,
    target: str | None = None,
    base_url: str,
    requested_by: str | None = None,
) -> RequestView:
    """Open a request to promote NAME:VERSION of `source` through the gate out of it. Automation opens
    on someone's behalf: `actor` is then `system` and `requested_by` the person whose action led here."""
    gate = _gate_for(settings, source, target)
    with db.write() as session:
        record = model_version(session, environment=source, name=name, version=version)
        if record is None:
            raise NotFoundError(
                f"no version {name}:{version} in '{source}'", details={"model": name, "version": version}
            )
        _refuse_second_request(session, record=record, gate=gate)
        request = _new_request(session, settings, record=record, gate=gate, requested_by=requested_by or actor)
        session.add(request)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="request.open",
            environment=gate.target,
            subject=f"request:{request.id}",
            payload={"model": name, "version": version, "from": source, "to": gate.target, "digest": record.digest},
        )
        recipients = outbox.approvers(
            session,
            role=gate.approver_role.value,
            environment=gate.target,
            exclude={*evidence.authors_of(request), request.requested_by},
        ) - evidence.administrators(session)
        outbox.emit(
            session, settings, event="request.opened", request=request, recipients=recipients, base_url=base_url
        )
        return view(request)


def _refuse_second_request(session: Session, *, record: ModelVersion, gate: Gate) -> None:
    """A version goes through a gate once: refused while it has a request there that is active or done."""
    existing = session.execute(
        select(PromotionRequest).where(
            PromotionRequest.model_version_id == record.id,
            PromotionRequest.target_env == gate.target,
            PromotionRequest.state.in_([*ACTIVE, RequestState.PROMOTED.value]),
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise ConflictError(
            f"{record.name}:{record.version} already has request {existing.id} into '{gate.target}' ({existing.state})",
            details={"request": existing.id, "state": existing.state},
        )


def _new_request(
    session: Session, settings: Settings, *, record: ModelVersion, gate: Gate, requested_by: str
) -> PromotionRequest:
    """An open request for `record` at `gate`: the gate's policy as it is now, and the evidence."""
    made_by = authors.of_version(session, record)
    names = authors.names(made_by)
    return PromotionRequest(
        gate=gate.name,
        model_version_id=record.id,
        model_name=record.name,
        source_env=record.environment,
        source_version=record.version,
        target_env=gate.target,
        state=RequestState.OPEN.value,
        requested_by=requested_by,
        author=names[0] if names else record.created_by,
        authors=made_by,
        required_approvals=gate.approvals,
        approver_role=gate.approver_role.value,
        required_checks=list(gate.checks),
        evidence=evidence.evidence(session, settings, record, gate, made_by, requested_by),
        created_at=utcnow(),
        expires_at=utcnow() + gate.expiry,
    )


def open_on_registration(
    db: Database, settings: Settings, *, actor: str, env: str, name: str, version: int, base_url: str
) -> RequestView | None:
    """Policy `auto_request`: registering a version opens its request at the gate out of `env`."""
    gate = settings.gate_from(env)
    if gate is None or not gate.auto_request:
        return None
    return open_request(db, settings, actor=actor, source=env, name=name, version=version, base_url=base_url)


# -- deciding ----------------------------------------------------------------------------------------


def _load(session: Session, request_id: int) -> PromotionRequest:
    request = session.get(PromotionRequest, request_id)
    if request is None:
        raise NotFoundError(f"no promotion request {request_id}", details={"request": request_id})
    return request


def _expire_if_due(
    session: Session, settings: Settings, request: PromotionRequest, base_url: str, *, now: datetime | None = None
) -> bool:
    now = now or utcnow()
    expires_at = as_utc(request.expires_at)
    if request.state != RequestState.OPEN.value or expires_at is None or expires_at > now:
        return False
    request.state, request.decided_at = RequestState.EXPIRED.value, now
    audit.record(
        session,
        actor=SYSTEM,
        action="request.expire",
        environment=request.target_env,
        subject=f"request:{request.id}",
    )
    outbox.emit(
        session,
        settings,
        event="request.expired",
        request=request,
        recipients={request.requested_by, request.author},
        base_url=base_url,
    )
    return True


def may_decide(settings: Settings, principal: Principal, request: RequestView) -> None:
    """GateRefusal if `principal` may not decide the open `request` (its state and checks aside)."""
    opened_at = as_utc(request.created_at)
    assert opened_at is not None
    names = [str(a["name"]) for a in request.authors]
    gate = settings.gate_into(request.target_env)
    check_decider(gate, principal, authors=names, requester=request.requested_by, opened_at=opened_at)
    check_credential(principal)


def _check_decider(gate: Gate, principal: Principal, request: PromotionRequest) -> None:
    opened_at = as_utc(request.created_at)
    assert opened_at is not None
    check_decider(
        gate, principal, authors=evidence.authors_of(request), requester=request.requested_by, opened_at=opened_at
    )


def _refuse_while_checks_block(session: Session, request: PromotionRequest) -> None:
    """No approval while a check the gate requires has not passed (the latest run of each counts)."""
    results = evidence.check_results(session, request.model_version_id)
    blocking = blocking_checks(request.required_checks, {k: v["status"] for k, v in results.items()})
    if blocking:
        listed = ", ".join(f"{name} ({status})" for name, status in blocking.items())
        raise ConflictError(
            f"request {request.id} cannot be approved while required checks have not passed: {listed}",
            details={"checks": blocking},
        )


def _add_decision(
    session: Session,
    gate: Gate,
    *,
    request: PromotionRequest,
    principal: Principal,
    approve: bool,
    comment: str | None,
) -> None:
    """The principal's approval or rejection of an open request, once each, if the gate lets them decide."""
    try:
        check_open(RequestState(request.state), request.id)
        _check_decider(gate, principal, request)
        check_credential(principal)
    except GateRefusal as exc:
        raise _refused(exc) from None
    if any(d.actor == principal.name for d in request.decisions):
        raise ConflictError(f"{principal.name} already decided request {request.id}")
    if approve:
        _refuse_while_checks_block(session, request)
    request.decisions.append(
        Decision(actor=principal.name, decision="approve" if approve else "reject", comment=comment, at=utcnow())
    )
    session.flush()


def _settle(request: PromotionRequest, gate: Gate, *, approve: bool) -> str | None:
    """After a decision: one rejection rejects, the quorum of approvals approves. Returns the event to
    announce when the request's state moved."""
    if not approve:
        request.state, request.decided_at = RequestState.REJECTED.value, utcnow()
        return "request.rejected"
    approvers = [d.actor for d in request.decisions if d.decision == "approve"]
    if quorum_reached(gate, approvers):
        request.state, request.decided_at = RequestState.APPROVED.value, utcnow()
        return "request.approved"
    return None


def decide(
    db: Database,
    settings: Settings,
    *,
    principal: Principal,
    env: str,
    request_id: int,
    approve: bool,
    comment: str | None,
    base_url: str,
    events: Publisher = NO_EVENTS,
) -> RequestView:
    """Approve or reject. The write transaction serializes deciders: exactly one completes a quorum, and
    it announces `RequestApproved` once the transaction is committed."""
    if not approve and not (comment and comment.strip()):
        raise ValidationError("a rejection needs a reason: give it with --comment", details={"field": "comment"})
    with db.write() as session:
        request = _load(session, request_id)
        if request.target_env != env:
            raise NotFoundError(f"no promotion request {request_id} into '{env}'", details={"request": request_id})
        expired = _expire_if_due(session, settings, request, base_url)
        if not expired:
            gate = settings.gate_into(request.target_env)
            _add_decision(session, gate, request=request, principal=principal, approve=approve, comment=comment)
            event = _settle(request, gate, approve=approve)
            audit.record(
                session,
                actor=principal.name,
                action="request.approve" if approve else "request.reject",
                environment=request.target_env,
                subject=f"request:{request.id}",
                payload={"comment": comment, "state": request.state},
            )
            if event:
                outbox.emit(
                    session,
                    settings,
                    event=event,
                    request=request,
                    recipients={request.requested_by, request.author},
                    base_url=base_url,
                    note=comment,
                )
        result = view(request)
    if expired:
        raise ConflictError(f"request {request_id} has expired", details={"state": "expired"})
    if result.state == RequestState.APPROVED.value:
        events.publish(RequestApproved(request_id=request_id, target=result.target_env))
    return result


def expire_due(db: Database, settings: Settings, *, base_url: str, now: datetime | None = None) -> int:
    """Close open requests past their expiry at `now` (the server's clock); returns how many."""
    now = now or utcnow()
    with db.write() as session:
        due = session.execute(
            select(PromotionRequest).where(
                PromotionRequest.state == RequestState.OPEN.value, PromotionRequest.expires_at <= now
            )
        ).scalars()
        return sum(_expire_if_due(session, settings, request, base_url, now=now) for request in due)


# -- reading -----------------------------------------------------------------------------------------


def get(db: Database, request_id: int, *, env: str | None = None) -> RequestView:
    with db.read() as session:
        request = _load(session, request_id)
        if env is not None and env not in (request.source_env, request.target_env):
            raise NotFoundError(f"no promotion request {request_id} in '{env}'", details={"request": request_id})
        result = view(request)
        # Checks run after the request was opened: show them as they are now.
        result.evidence["checks"] = evidence.check_results(session, request.model_version_id)
        return result


def list_requests(db: Database, *, env: str, state: str | None = None, limit: int = 100) -> list[RequestView]:
    query = (
        select(PromotionRequest)
        .where(or_(PromotionRequest.source_env == env, PromotionRequest.target_env == env))
        .order_by(PromotionRequest.id.desc())
        .limit(limit)
    )
    if state:
        if state not in RequestState.__members__.values():
            raise ValidationError(
                f"unknown request state '{state}'; expected one of: {', '.join(s.value for s in RequestState)}"
            )
        query = query.where(PromotionRequest.state == state)
    with db.read() as session:
        return [view(r) for r in session.execute(query).scalars()]


def waiting_for(db: Database, settings: Settings, principal: Principal) -> list[RequestView]:
    """Open requests this person may decide and has not yet."""
    with db.read() as session:
        rows = session.execute(
            select(PromotionRequest)
            .where(PromotionRequest.state == RequestState.OPEN.value)
            .order_by(PromotionRequest.id)
        ).scalars()
        waiting = []
        for request in rows:
            gate = settings.gate_into(request.target_env)
            try:
                _check_decider(gate, principal, request)
            except GateRefusal:
                continue
            if not any(d.actor == principal.name for d in request.decisions):
                waiting.append(view(request))
        return waiting
