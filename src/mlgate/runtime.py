"""The running server of a home: start it in the foreground, find it, stop it and what it started."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate import sandbox as sandboxes
from mlgate.config import Settings
from mlgate.errors import ConflictError
from mlgate.private_home import PRIVATE_FOLDER_MODE, make_private

STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServerRecord:
    pid: int
    url: str
    children: list[int]

    @classmethod
    def read(cls, path: Path) -> ServerRecord | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return cls(pid=int(data["pid"]), url=str(data["url"]), children=[int(c) for c in data["children"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child, exited but not reaped) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


def running_server(settings: Settings) -> ServerRecord | None:
    record = ServerRecord.read(settings.server_json)
    if record is None or not alive(record.pid):
        return None
    return record


def serve(settings: Settings, *, host: str, port: int) -> None:
    """Run the control plane in the foreground until interrupted."""
    import uvicorn

    from mlgate.interfaces.api.app import create_app
    from mlgate.ports import free_port

    # Everything the server and its children (tracking servers, serving hosts, jobs) create is private.
    make_private()
    sandboxes.announce(sandboxes.from_settings(settings))
    # Held for the server's lifetime: a second server of the same home, even one started at the
    # same instant, finds it taken and refuses to start.
    settings.home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    with (settings.home / "server.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"a server of the home {settings.home} is already running") from None
        # The server's own MLflow clients talk to tracking servers on loopback that it supervises: a
        # dead one should fail a request in seconds, not after MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        port = port or free_port(host)
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        app = create_app(settings, base_url=f"http://{shown_host}:{port}", record_server=True)
        # uvicorn shuts down gracefully on SIGTERM, then raises it again: end with status 0 then.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(
            app,
            host=host,
            port=port,
            http=_guarded(settings),
            ws="none",
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=10,
        )


def _guarded(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with the server policy's header and body deadlines and connection limit (the
    serving hosts' guard, `mlgate.serving.connections`)."""
    from mlgate.serving.connections import guarded_protocol
    from mlgate.serving.listeners import ConnectionPolicy

    policy = settings.raw.server
    limits = ConnectionPolicy(
        header_timeout_s=policy.header_timeout_s,
        body_timeout_s=policy.body_timeout_s,
        max_connections=policy.max_connections,
        max_concurrency=policy.max_connections,
    )
    return guarded_protocol(limits)


def stop(settings: Settings) -> list[str]:
    """Stop the home's server and everything it started; returns what was stopped."""
    from mlgate.adapters.mlflow.tracking_servers import kill_group
    from mlgate.adapters.serving.local import stop_hosts

    record = ServerRecord.read(settings.server_json)
    stopped: list[str] = []
    if record is None:
        return stop_hosts(settings)
    if alive(record.pid):
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(record.pid):
            os.kill(record.pid, signal.SIGKILL)
        stopped.append(f"server (pid {record.pid}) at {record.url}")
    for child in record.children:  # normally gone with the server; a killed server leaves them
        if alive(child):
            kill_group(child)
            stopped.append(f"tracking server (pid {child})")
    settings.server_json.unlink(missing_ok=True)
    return stopped + stop_hosts(settings)
