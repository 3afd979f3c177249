"""The audit log: list events, verify it, take a checkpoint, export the auditors' bundle (admins)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import IO

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from mlgate.interfaces.api.deps import Administrator, ContextDep
from mlgate.interfaces.api.schemas.audit import (
    AuditCheckpointPublic,
    AuditEventPublic,
    AuditEventsPublic,
    AuditVerifyPublic,
)
from mlgate.services import audit, audit_bundle, audit_integrity

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", response_model=AuditEventsPublic)
def list_events(
    _: Administrator,
    ctx: ContextDep,
    actor: str | None = None,
    action: str | None = None,
    environment: str | None = None,
    since: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=10_000),
) -> AuditEventsPublic:
    where = audit.AuditFilter(actor=actor, action=action, environment=environment, since=since, limit=limit)
    events = [AuditEventPublic.model_validate(e, from_attributes=True) for e in audit.list_events(ctx.db, where=where)]
    return AuditEventsPublic(data=events, count=len(events))


def verify_report(report: audit_integrity.IntegrityReport) -> AuditVerifyPublic:
    return AuditVerifyPublic.model_validate(report, from_attributes=True)  # `unvouched` is a property


@router.get("/verify", response_model=AuditVerifyPublic)
def verify(_: Administrator, ctx: ContextDep) -> AuditVerifyPublic:
    """Every event's MAC, payload digest and link, the recorded head, and every signed checkpoint."""
    return verify_report(audit_integrity.verify(ctx.db, ctx.settings, ctx.plane.audit_keys))


@router.post("/checkpoints", response_model=AuditCheckpointPublic)
def take_checkpoint(_: Administrator, ctx: ContextDep) -> AuditCheckpointPublic:
    """Sign a checkpoint of the head now, if it moved and the events since the last one verify."""
    outcome = audit_integrity.take_checkpoint(
        ctx.db, ctx.settings, ctx.plane.audit_keys, now=ctx.plane.clock.now(), force=True
    )
    made = outcome.checkpoint
    if made is None:
        return AuditCheckpointPublic(written=False, reason=outcome.reason)
    return AuditCheckpointPublic(written=True, reason=outcome.reason, **asdict(made))


@router.get("/export", response_class=StreamingResponse)
def export(_: Administrator, ctx: ContextDep) -> StreamingResponse:
    """The auditors' bundle (a zip): events, checkpoints, public key, manifest. A checkpoint of the head
    is taken first, so that the bundle's last event is vouched for when the log verifies."""
    keys, now = ctx.plane.audit_keys, ctx.plane.clock.now()
    audit_integrity.take_checkpoint(ctx.db, ctx.settings, keys, now=now, force=True)
    spool = tempfile.SpooledTemporaryFile(max_size=1 << 24)  # noqa: SIM115 (closed when streamed)
    audit_bundle.export_bundle(ctx.db, ctx.settings, keys, spool, now=now)
    spool.seek(0)
    name = f"mlgate-audit-{now.strftime('%Y%m%dT%H%M%SZ')}.zip"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(_chunks(spool), media_type="application/zip", headers=headers)


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(1 << 16):
            yield chunk
