"""The evidence a promotion request's deciders see, and who may not decide it.

Worked out when the request opens: the model's digest, card, metrics, lineage and signature, its
comparison with the version it would replace, its authors, and who could decide it then; the checks
are read as they are now whenever the request is shown.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.models import CheckRecord, ModelVersion, PromotionRequest, RoleBinding, User
from mlgate.adapters.sql.queries import chain_root
from mlgate.config import Settings
from mlgate.domain.gates import Gate
from mlgate.domain.permissions import Role
from mlgate.services.notifications import outbox
from mlgate.services.registration import authors


def author_of(session: Session, record: ModelVersion) -> str:
    """The first of the model's authors (the one notifications about it go to), else its registrar."""
    found = authors.names(authors.of_version(session, record))
    return found[0] if found else chain_root(session, record=record).created_by


def authors_of(request: PromotionRequest) -> list[str]:
    """Everyone who made the request's model (a request opened before authors were kept: its author)."""
    return authors.names(request.authors) if request.authors is not None else [request.author]


def check_results(session: Session, model_version_id: int) -> dict[str, dict[str, Any]]:
    """The latest record of each check run on a version."""
    rows = session.execute(
        select(CheckRecord).where(CheckRecord.model_version_id == model_version_id).order_by(CheckRecord.id)
    ).scalars()
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        latest[row.name] = {
            "status": row.status,
            "summary": row.summary,
            "log_excerpt": row.log_excerpt,
            "artifacts": row.artifacts,
            "job_id": row.job_id,
            "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        }
    return latest


def champion(session: Session, env: str, name: str) -> ModelVersion | None:
    """The version of `name` most recently promoted into `env`: what the candidate would replace."""
    return session.execute(
        select(ModelVersion)
        .where(ModelVersion.environment == env, ModelVersion.name == name)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    ).scalar_one_or_none()


def _metrics(record: ModelVersion) -> dict[str, float]:
    metrics = (record.lineage or {}).get("metrics") or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def comparison(candidate: ModelVersion, incumbent: ModelVersion | None) -> dict[str, Any] | None:
    """Metric by metric: the candidate against the incumbent in the target environment."""
    if incumbent is None:
        return None
    ours, theirs = _metrics(candidate), _metrics(incumbent)
    rows = [
        {
            "metric": key,
            "candidate": ours.get(key),
            "champion": theirs.get(key),
            "delta": (ours[key] - theirs[key]) if key in ours and key in theirs else None,
        }
        for key in sorted(set(ours) | set(theirs))
    ]
    return {
        "champion": {"name": incumbent.name, "version": incumbent.version, "digest": incumbent.digest},
        "metrics": rows,
    }


def evidence(
    session: Session, settings: Settings, record: ModelVersion, gate: Gate, made_by: authors.Authors, requested_by: str
) -> dict[str, Any]:
    return {
        "digest": record.digest,
        # who made the model: none of them decides its requests
        "authors": made_by,
        # who may decide, as the request opened: a role granted later does not count for this request
        "deciders": sorted(
            outbox.approvers(
                session,
                role=gate.approver_role.value,
                environment=gate.target,
                exclude={*authors.names(made_by), requested_by},
            )
            - administrators(session)
        ),
        # how jobs and checks ran when this request opened: 'none' means user code had the server's powers
        "sandbox": settings.execution.sandbox,
        "card": record.card,
        "metrics": _metrics(record),
        "lineage": record.lineage,
        "signature": record.signature,
        "comparison": comparison(record, champion(session, gate.target, record.name)),
    }


def administrators(session: Session) -> set[str]:
    return set(
        session.execute(select(User.name).join(RoleBinding).where(RoleBinding.role == Role.ADMIN.value)).scalars()
    )
