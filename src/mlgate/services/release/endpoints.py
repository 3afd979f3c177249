"""Endpoints in the control database: creation, keys, and the revisions of their allocations.

Keys are high-entropy and kept only as SHA-256; they are returned once, when made. Every change of an
endpoint's deployments is a new revision row (the newest is live); rollback writes a new revision that
copies the one the live revision replaced. Nothing here talks to a serving host: `services.release.serving`
pushes an allocation first and records it with `record_revision` only once the host has applied it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Endpoint, EndpointRevision, utcnow
from mlgate.config import ENDPOINT_NAME, Settings
from mlgate.domain.endpoints import Allocation
from mlgate.domain.permissions import SYSTEM
from mlgate.domain.tokens import display_prefix, token_hash
from mlgate.errors import ConflictError, NotFoundError, ValidationError
from mlgate.services import audit

KEY_PREFIX = "mlgk_"
KEY_BYTES = 32
Which = Literal["primary", "secondary"]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


@dataclass(frozen=True)
class EndpointView:
    environment: str
    name: str
    description: str
    origin: str
    created_by: str
    created_at: datetime
    key_prefixes: dict[str, str]
    revision: int | None
    allocation: Allocation
    updated_by: str | None
    updated_at: datetime | None
    can_roll_back: bool


@dataclass(frozen=True)
class Keys:
    primary: str
    secondary: str


def _find(session: Session, env: str, name: str) -> Endpoint:
    row = session.execute(
        select(Endpoint).where(Endpoint.environment == env, Endpoint.name == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(
            f"no endpoint '{name}' in '{env}'; create it with `mlgate endpoints create {name} --env {env}`",
            details={"endpoint": name, "environment": env},
        )
    return row


def _live(session: Session, endpoint_id: int) -> EndpointRevision | None:
    return session.execute(
        select(EndpointRevision)
        .where(EndpointRevision.endpoint_id == endpoint_id)
        .order_by(EndpointRevision.number.desc())
        .limit(1)
    ).scalar_one_or_none()


def slot_table(allocation: Allocation) -> list[dict[str, object]]:
    """An endpoint's full slot table as its audit events record it: what serves where, with what share."""
    return [{"slot": s.slot, "model": s.model, "version": s.version, "weight": s.traffic} for s in allocation.slots]


def slots_payload(session: Session, env: str, name: str) -> dict[str, object]:
    """`endpoint` and its live `slots` (`slot_table`), for an event about an endpoint that did not change
    its allocation, so that every release event says what served after it (an unknown endpoint: none)."""
    row = session.execute(
        select(Endpoint).where(Endpoint.environment == env, Endpoint.name == name)
    ).scalar_one_or_none()
    live = _live(session, row.id) if row is not None else None
    allocation = Allocation.from_json(live.slots, live.mirror) if live else Allocation()
    return {"endpoint": name, "slots": slot_table(allocation)}


def _view(row: Endpoint, live: EndpointRevision | None) -> EndpointView:
    return EndpointView(
        environment=row.environment,
        name=row.name,
        description=row.description,
        origin=row.origin,
        created_by=row.created_by,
        created_at=row.created_at,
        key_prefixes={"primary": row.primary_key_prefix, "secondary": row.secondary_key_prefix},
        revision=live.number if live else None,
        allocation=Allocation.from_json(live.slots, live.mirror) if live else Allocation(),
        updated_by=live.created_by if live else None,
        updated_at=live.created_at if live else None,
        can_roll_back=live is not None and live.parent_number is not None,
    )


def create(
    db: Database, settings: Settings, env: str, name: str, *, actor: str, description: str = "", origin: str = "api"
) -> tuple[EndpointView, Keys]:
    settings.environment(env)
    if not ENDPOINT_NAME.match(name):
        raise ValidationError(
            f"invalid endpoint name '{name}': expected letters, digits, '.', '_' or '-' (at most 63), "
            "starting with a letter or digit",
            details={"endpoint": name},
        )
    keys = Keys(new_key(), new_key())
    with db.write() as session:
        exists = session.execute(
            select(Endpoint.id).where(Endpoint.environment == env, Endpoint.name == name)
        ).scalar_one_or_none()
        if exists is not None:
            raise ConflictError(f"endpoint '{name}' already exists in '{env}'", details={"endpoint": name})
        row = Endpoint(
            environment=env,
            name=name,
            description=description,
            primary_key_hash=token_hash(keys.primary),
            primary_key_prefix=display_prefix(keys.primary),
            secondary_key_hash=token_hash(keys.secondary),
            secondary_key_prefix=display_prefix(keys.secondary),
            origin=origin,
            created_by=actor,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="endpoint.create",
            environment=env,
            subject=f"endpoint:{name}",
            payload={"origin": origin, "endpoint": name, "slots": []},
        )
        return _view(row, None), keys


def ensure_declared(db: Database, settings: Settings) -> list[str]:
    """Create the endpoints the policy config declares that do not exist yet; returns their names.
    Their keys are shown to nobody: an operator gets one with `mlgate endpoints rotate-key`."""
    made = []
    for env, declared in settings.endpoints.items():
        existing = set(names(db, env))
        for endpoint in declared:
            if endpoint.name not in existing:
                try:
                    create(
                        db,
                        settings,
                        env,
                        endpoint.name,
                        actor=SYSTEM,
                        description=endpoint.description,
                        origin="config",
                    )
                except ConflictError:  # created meanwhile
                    continue
                made.append(f"{env}/{endpoint.name}")
    return made


def environments_with_endpoints(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.execute(select(Endpoint.environment).distinct()).scalars())


def names(db: Database, env: str) -> list[str]:
    with db.read() as session:
        return list(session.execute(select(Endpoint.name).where(Endpoint.environment == env)).scalars())


def get(db: Database, env: str, name: str) -> EndpointView:
    with db.read() as session:
        row = _find(session, env, name)
        return _view(row, _live(session, row.id))


def list_endpoints(db: Database, env: str) -> list[EndpointView]:
    with db.read() as session:
        rows = session.execute(select(Endpoint).where(Endpoint.environment == env).order_by(Endpoint.name)).scalars()
        return [_view(row, _live(session, row.id)) for row in rows]


def key_hashes(db: Database, env: str) -> dict[str, list[str]]:
    with db.read() as session:
        rows = session.execute(select(Endpoint).where(Endpoint.environment == env)).scalars()
        return {row.name: [row.primary_key_hash, row.secondary_key_hash] for row in rows}


def rotate_key(db: Database, env: str, name: str, which: Which, *, actor: str) -> str:
    if which not in ("primary", "secondary"):
        raise ValidationError(f"--which must be primary or secondary, got '{which}'", details={"which": which})
    key = new_key()
    with db.write() as session:
        row = _find(session, env, name)
        if which == "primary":
            row.primary_key_hash, row.primary_key_prefix = token_hash(key), display_prefix(key)
        else:
            row.secondary_key_hash, row.secondary_key_prefix = token_hash(key), display_prefix(key)
        audit.record(
            session,
            actor=actor,
            action="endpoint.rotate-key",
            environment=env,
            subject=f"endpoint:{name}",
            payload={"which": which, "prefix": display_prefix(key), **slots_payload(session, env, name)},
        )
    return key


def rollback_target(db: Database, env: str, name: str) -> tuple[Allocation, int | None]:
    """The allocation the live revision replaced, and that one's own parent (where a further rollback goes)."""
    with db.read() as session:
        row = _find(session, env, name)
        live = _live(session, row.id)
        if live is None or live.parent_number is None:
            raise ConflictError(
                f"endpoint '{name}' in '{env}' has no earlier allocation to roll back to",
                details={"endpoint": name, "environment": env},
            )
        parent = session.execute(
            select(EndpointRevision).where(
                EndpointRevision.endpoint_id == row.id, EndpointRevision.number == live.parent_number
            )
        ).scalar_one()
        return Allocation.from_json(parent.slots, parent.mirror), parent.parent_number


def record_revision(
    db: Database,
    env: str,
    name: str,
    allocation: Allocation,
    *,
    actor: str,
    reason: str,
    expected: int | None,
    parent: int | Literal["live"] | None = "live",
    payload: dict[str, object] | None = None,
) -> EndpointView:
    """Write `allocation` as the endpoint's new live revision. `expected` is the live revision the change
    was planned from: a different one means a concurrent change, refused. `parent` is where a rollback of
    this revision goes: by default the revision it replaces."""
    with db.write() as session:
        row = _find(session, env, name)
        live = _live(session, row.id)
        current = live.number if live else None
        if current != expected:
            raise ConflictError(
                f"endpoint '{name}' changed meanwhile (revision {current}, planned from {expected}); try again",
                details={"endpoint": name, "revision": current},
            )
        number = (
            int(
                session.execute(
                    select(func.coalesce(func.max(EndpointRevision.number), 0)).where(
                        EndpointRevision.endpoint_id == row.id
                    )
                ).scalar_one()
            )
            + 1
        )
        revision = EndpointRevision(
            endpoint_id=row.id,
            number=number,
            slots=allocation.slots_json(),
            mirror=allocation.mirror_json(),
            parent_number=current if parent == "live" else parent,
            reason=reason,
            created_by=actor,
            created_at=utcnow(),
        )
        session.add(revision)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action=f"endpoint.{reason}",
            environment=env,
            subject=f"endpoint:{name}",
            payload=_revision_payload(name, number, allocation, payload or {}),
        )
        return _view(row, revision)


def _revision_payload(name: str, number: int, allocation: Allocation, extra: dict[str, object]) -> dict[str, object]:
    """A revision's audit payload: its weights and mirror, the change's own details, and the endpoint's
    whole slot table after it (`slot_table`), from which the log alone says what served when."""
    return {
        "revision": number,
        "weights": allocation.weights,
        "mirror": allocation.mirror_json(),
        **extra,
        "endpoint": name,
        "slots": slot_table(allocation),
    }
