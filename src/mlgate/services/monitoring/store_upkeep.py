"""Each environment's monitoring store kept, by the server's `monitoring-store` worker: compaction, retention.

A pass compacts every hour that ended `compact_after_s` ago (its request parts and its labels), summarizes
the hours it compacted against the endpoint's serving baseline (`mlgate.services.monitoring.window`), then
deletes what the retention policy says (`mlgate.domain.store_retention`). Each deletion is recorded in the
audit log (`monitoring.retention`: the endpoint, the hour, why, its rows, files and bytes, the policy)
and committed before the files go: a pass that dies in between leaves the hour, and the next pass deletes
it and records it again; the log never misses a deletion. A deleted hour's summary goes with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mlgate.adapters.monitoring import summaries, upkeep
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.domain.permissions import SYSTEM
from mlgate.domain.request_records import feedback_folder
from mlgate.domain.store_retention import Retention, Stored, expired
from mlgate.errors import NotFoundError
from mlgate.services import audit
from mlgate.services.monitoring import runs, window

log = logging.getLogger(__name__)
RETENTION_ACTION = "monitoring.retention"


@dataclass
class UpkeepReport:
    compacted_parts: int = 0  # parts replaced by compacted ones
    deleted: list[dict[str, Any]] = field(default_factory=list)  # the audit payloads of the hours deleted


def _compact_due(
    root: Path, endpoint: str, hours: list[upkeep.StoredHour], *, due: datetime, max_rows: int
) -> tuple[int, list[upkeep.StoredHour]]:
    """The hours that ended before `due` compacted: how many parts were replaced, and the hours whose
    requests were compacted."""
    replaced, compacted = 0, []
    for stored in hours:
        if stored.hour.hour is None or stored.hour.end > due:
            continue
        requests = upkeep.compact(stored.folder, max_rows=max_rows)
        replaced += requests + upkeep.compact(stored.hour.folder(feedback_folder(root, endpoint)), max_rows=max_rows)
        if requests:
            compacted.append(stored)
    return replaced, compacted


def _summarize(db: Database, settings: Settings, env: str, endpoint: str, hours: list[upkeep.StoredHour]) -> None:
    """Summaries of the hours just compacted, against the endpoint's serving baseline: the next window that
    covers them reads these instead of their rows."""
    try:
        reference = runs.serving_version(db, settings, env, endpoint)
    except NotFoundError:  # requests of an endpoint since removed
        reference = None
    summary_dir = settings.environment(env).summary_dir
    for stored in hours:
        window.summarize_hour(
            summary_dir, endpoint, stored.hour, stored.folder, reference.profile if reference else None
        )


def _policy(settings: Settings) -> tuple[Retention, dict[str, Any]]:
    configured = settings.raw.monitoring.retention
    days = configured.max_age_days
    policy = Retention(timedelta(days=days) if days is not None else None, configured.max_bytes)
    return policy, {"max_age_days": days, "max_bytes": configured.max_bytes}


def _delete(
    db: Database,
    settings: Settings,
    env: str,
    root: Path,
    stored: upkeep.StoredHour,
    reason: str,
    policy: dict[str, Any],
) -> dict[str, Any]:
    payload = {
        "endpoint": stored.endpoint,
        "hour": stored.hour.name,
        "reason": reason,
        "rows": stored.rows,
        "files": stored.files,
        "bytes": stored.bytes,
        "policy": policy,
    }
    with db.write() as session:
        audit.record(
            session,
            actor=SYSTEM,
            action=RETENTION_ACTION,
            environment=env,
            subject=f"endpoint:{stored.endpoint}",
            payload=payload,
        )
    upkeep.delete_hour(root, stored)
    summaries.delete(settings.environment(env).summary_dir, stored.endpoint, stored.hour)
    return payload


def keep_store(db: Database, settings: Settings, env: str, root: Path, *, now: datetime) -> UpkeepReport:
    """One environment's store: compacted, then held to the retention policy."""
    report = UpkeepReport()
    upkeep.sweep_leftovers(root)
    due = now - timedelta(seconds=settings.raw.monitoring.compact_after_s)
    max_rows = settings.raw.monitoring.compact_max_rows
    for endpoint in upkeep.endpoints(root):
        replaced, compacted = _compact_due(
            root, endpoint, upkeep.stored_hours(root, endpoint), due=due, max_rows=max_rows
        )
        report.compacted_parts += replaced
        _summarize(db, settings, env, endpoint, compacted)
    policy, described = _policy(settings)
    stored = [
        Stored(h, h.hour.end, h.bytes)
        for endpoint in upkeep.endpoints(root)
        for h in upkeep.stored_hours(root, endpoint)
    ]
    for hour, reason in expired(stored, policy, now=now):
        report.deleted.append(_delete(db, settings, env, root, hour, reason, described))
    return report


def sweep(db: Database, settings: Settings, *, now: datetime) -> UpkeepReport:
    """Every environment's store kept; what was done, in all."""
    total = UpkeepReport()
    for env in settings.environments:
        if not env.monitoring_dir.is_dir():
            continue
        report = keep_store(db, settings, env.name, env.monitoring_dir, now=now)
        total.compacted_parts += report.compacted_parts
        total.deleted += report.deleted
    if total.compacted_parts or total.deleted:
        log.info("monitoring stores: %d parts compacted, %d hours deleted", total.compacted_parts, len(total.deleted))
    return total
