"""What every request handler may reach: settings, the control database, the tracking servers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from mlgate.adapters.mlflow.tracking_servers import TrackingServers
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings

if TYPE_CHECKING:
    from mlgate.services.release.serving import Serving


@dataclass
class AppContext:
    settings: Settings
    db: Database
    tracking: TrackingServers
    base_url: str  # where this server answers; the public URL unless the config names another
    proxy: httpx.AsyncClient | None = None
    on_approved: Callable[[], None] | None = None  # wakes the promotion worker after a final approval
    on_checks: Callable[[], None] | None = None  # wakes the staging pipeline after checks are asked for
    serving: Serving | None = None  # the serving hosts and endpoint changes, once started

    @property
    def public_url(self) -> str:
        return self.settings.public_url or self.base_url

    def tracking_uri(self, env: str) -> str:
        return f"{self.public_url}/mlflow/{env}/"
