"""Continuous integration's last step, in one place: register a run's model, then open its gate request.

Both ways a version enters the first environment go through here: a person or CI registering through
the API, and a retraining registering its candidate (`services.monitoring.retraining`).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlgate.adapters.mlflow.base import ModelRegistry
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.errors import ConflictError
from mlgate.services.promotion import requests
from mlgate.services.registration import models


@dataclass(frozen=True)
class Submitted:
    version: models.ModelVersionView
    created: bool  # False: the same logged model was registered before, and this is its version
    request_id: int | None  # the request at the gate out of the environment (policy `auto_request`)


def register_and_request(
    db: Database,
    settings: Settings,
    registry: ModelRegistry,
    *,
    actor: str,
    env: str,
    request: models.RegisterRequest,
    base_url: str,
    resuming: bool = False,
) -> Submitted:
    """Register `request`'s model in `env`; a new version gets its request at the gate out of `env`.

    `resuming`: the caller may have done this before and been interrupted (a retraining after a server
    restart), so an already registered version still gets its request, or keeps the one it has.
    """
    view, created = models.register(db, settings, registry, actor=actor, env=env, request=request)
    if not created and not resuming:
        return Submitted(version=view, created=False, request_id=None)
    try:
        opened = requests.open_on_registration(
            db, settings, actor=actor, env=env, name=view.name, version=view.version, base_url=base_url
        )
    except ConflictError as exc:
        if not resuming:
            raise
        return Submitted(version=view, created=created, request_id=(exc.details or {}).get("request"))
    return Submitted(version=view, created=created, request_id=opened.id if opened else None)
