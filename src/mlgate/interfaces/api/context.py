"""What every request handler may reach: settings, the control database, the tracking servers, the serving
hosts, and the event hub services publish to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from mlgate.adapters.mlflow.base import TrackingServers
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.services.events import Publisher

if TYPE_CHECKING:
    from mlgate.interfaces.api.door.upstream import UpstreamPool
    from mlgate.server.control_plane import ControlPlane
    from mlgate.services.release.serving import Serving


@dataclass
class AppContext:
    settings: Settings
    db: Database
    tracking: TrackingServers
    base_url: str  # where this server answers; the public URL unless the config names another
    events: Publisher
    serving: Serving  # the serving hosts and endpoint changes
    plane: ControlPlane  # everything behind the API: its workers, for the workers route
    proxy: httpx.AsyncClient | None = None  # the API's client to the serving hosts, open while the app runs
    door: UpstreamPool | None = None  # the MLflow door's connections to the tracking servers

    @property
    def public_url(self) -> str:
        return self.settings.public_url or self.base_url

    def tracking_uri(self, env: str) -> str:
        return f"{self.public_url}/mlflow/{env}/"
