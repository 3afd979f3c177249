"""The staging pipeline: a version that arrives in staging gets its gate B request and its checks.

A periodic sweep (idempotent, so nothing is lost when the server stops half-way): every version in
staging that came through gate A and has no request at the gate out of staging gets one (requested by
gate A's requester); every open request whose required checks have no record yet gets them run.
"""

from __future__ import annotations

import logging

from mlgate.adapters.mlflow.tracking_servers import TrackingServers
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.services.serving import Serving

log = logging.getLogger(__name__)


class StagingPipeline:
    def __init__(
        self, settings: Settings, db: Database, serving: Serving, tracking: TrackingServers, *, base_url: str
    ) -> None:
        self.settings = settings
        self.db = db
        self.serving = serving
        self.tracking = tracking
        self.base_url = base_url

    def start(self) -> None:
        """Start the periodic sweep."""

    def stop(self) -> None:
        """Stop the sweep; checks already running finish as jobs."""

    def tick(self) -> None:
        """One sweep."""
