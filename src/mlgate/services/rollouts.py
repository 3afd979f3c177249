"""Production rollouts: a version that passed the gate into an environment rolls out to its endpoint.

A periodic worker (idempotent, crash-safe): every version that arrived through the gate into an
environment whose config names an endpoint for that model gets a rollout, carried out step by step
under the endpoint's policy (blue-green or canary), watched against its SLOs and rolled back
automatically on a breach.
"""

from __future__ import annotations

import logging

from mlgate.adapters.mlflow.tracking_servers import TrackingServers
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.services.serving import Serving

log = logging.getLogger(__name__)


class RolloutWorker:
    def __init__(
        self, settings: Settings, db: Database, serving: Serving, tracking: TrackingServers, *, base_url: str
    ) -> None:
        self.settings = settings
        self.db = db
        self.serving = serving
        self.tracking = tracking
        self.base_url = base_url

    def start(self) -> None:
        """Start the worker."""

    def stop(self) -> None:
        """Stop the worker; a rollout in progress resumes when the server starts again."""

    def tick(self) -> None:
        """One round: start due rollouts, advance running ones."""
