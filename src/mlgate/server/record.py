"""server.json: where the running server answers and which processes it started, for the CLI and `mlgate stop`."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime

from mlgate.adapters.mlflow.base import TrackingServers
from mlgate.config import Settings


class ServerRecorder:
    """Writes the record at start and again whenever a tracking server (re)starts, since those start on
    demand: a server killed hard leaves a record that still names every process `mlgate stop` must end."""

    def __init__(self, settings: Settings, *, base_url: str, tracking: TrackingServers) -> None:
        self._settings = settings
        self._base_url = base_url
        self._tracking = tracking
        self._started_at = datetime.now(UTC).isoformat()
        self._lock = threading.Lock()

    def write(self) -> None:
        children = [int(str(s["pid"])) for s in self._tracking.status().values() if s.get("pid")]
        record = {
            "pid": os.getpid(),
            "url": self._base_url,
            "public_url": self._settings.public_url or self._base_url,
            "config": str(self._settings.config_path),
            "started_at": self._started_at,
            "children": children,
        }
        path = self._settings.server_json
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=2))
            tmp.replace(path)

    def remove(self) -> None:
        self._settings.server_json.unlink(missing_ok=True)
