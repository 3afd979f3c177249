"""The `local` serving backend: one detached `python -m mlgate.serving` process per environment.

A host runs in its own session, so restarting the server does not interrupt scoring. What a later
server needs to adopt it is in `envs/<env>/serving/host.json` (owner-only): its `pid:start-time`
handle, port and admin token. A host is adopted when that process still runs and answers its admin
API with that token; otherwise a new one starts on the same port (a configured port, or the one first
picked) and restores its last applied spec from its state folder before the server pushes the
authoritative one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mlgate.adapters.serving.base import HostStatus
from mlgate.config import Environment, Settings
from mlgate.errors import BackendError, NotFoundError, ValidationError
from mlgate.ports import free_port
from mlgate.processes import handle, handle_alive, parse_handle

log = logging.getLogger(__name__)

RECORD_FILE = "host.json"
STATE_DIR = "state"
START_TIMEOUT_S = 60.0
PUSH_TIMEOUT = httpx.Timeout(300.0, connect=5.0)  # loading and warming up models takes its time
STATS_TIMEOUT_S = 10.0
ADMIN_TOKEN_ENV = "MLGATE_HOST_ADMIN_TOKEN"  # noqa: S105 - the variable's name


@dataclass
class HostRecord:
    handle: str | None
    port: int
    token: str
    restarts: int = 0
    started_at: str | None = None

    @property
    def pid(self) -> int | None:
        return parse_handle(self.handle)[0] if self.handle else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def read(cls, path: Path) -> HostRecord | None:
        try:
            raw = json.loads(path.read_text())
            return cls(
                handle=raw.get("handle"),
                port=int(raw["port"]),
                token=str(raw["token"]),
                restarts=int(raw.get("restarts", 0)),
                started_at=raw.get("started_at"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the admin token is inside
        with os.fdopen(fd, "w") as out:
            json.dump(self.__dict__, out, indent=2)
        os.replace(tmp, path)


def record_path(env: Environment) -> Path:
    return env.serving_dir / RECORD_FILE


def stop_hosts(settings: Settings) -> list[str]:
    """Stop every serving host of a home (`mlgate stop`); their records keep the port for the next start."""
    from mlgate.adapters.mlflow.tracking_servers import kill_group

    stopped = []
    for env in settings.environments:
        path = record_path(env)
        record = HostRecord.read(path)
        if record is None or record.handle is None:
            continue
        if handle_alive(record.handle):
            assert record.pid is not None
            kill_group(record.pid)
            stopped.append(f"serving host of {env.name} (pid {record.pid}) at {record.url}")
        record.handle = None
        record.write(path)
    return stopped


class LocalServingBackend:
    name = "local"

    def __init__(self, settings: Settings, *, python: str = sys.executable) -> None:
        self._settings = settings
        self._python = python
        self._envs = {env.name: env for env in settings.environments}
        serving = settings.serving
        self._options = [
            "--max-batch-size",
            str(serving.max_batch_size),
            "--max-wait-ms",
            str(serving.max_wait_ms),
            "--max-body-bytes",
            str(serving.max_body_bytes),
        ]
        if serving.workers > 1:
            self._options += ["--workers", str(serving.workers)]

    # --- the seam -----------------------------------------------------------------------------

    def ensure(self, env: Environment) -> tuple[HostStatus, bool]:
        path = record_path(env)
        record = HostRecord.read(path)
        if record is not None and record.handle and handle_alive(record.handle):
            if self._wait_answering(record, timeout_s=10.0):
                return self._status(env.name, record), False
            log.warning("the serving host of %s (pid %s) does not answer; replacing it", env.name, record.pid)
            self._kill(record)
        restarts = record.restarts + 1 if record is not None and record.handle else 0
        port = env.serving_port or (record.port if record is not None and _port_free(record.port) else free_port())
        record = self._spawn(env, port, restarts)
        return self._status(env.name, record), True

    def push(self, env: str, spec: dict[str, Any]) -> dict[str, Any]:
        record = self._record(env)
        try:
            answer = httpx.put(f"{record.url}/admin/spec", json=spec, headers=_auth(record), timeout=PUSH_TIMEOUT)
        except httpx.HTTPError as exc:
            raise BackendError(
                f"the serving host of '{env}' did not take the deployment: {exc}", details={"environment": env}
            ) from exc
        body = _json(answer)
        if answer.status_code == 200:
            return body
        message = str(body.get("message") or body.get("error") or answer.text[:500])
        if 400 <= answer.status_code < 500 and answer.status_code not in (401, 403):
            raise ValidationError(f"the serving host of '{env}' refused the deployment: {message}")
        raise BackendError(
            f"the serving host of '{env}' failed to apply the deployment ({answer.status_code}): {message}",
            details={"environment": env},
        )

    def running(self, env: str) -> bool:
        record = HostRecord.read(record_path(self._env(env)))
        return record is not None and record.handle is not None and handle_alive(record.handle)

    def status(self, env: str) -> HostStatus:
        record = HostRecord.read(record_path(self._env(env)))
        if record is None:
            return HostStatus(env, None, None, running=False, restarts=0, started_at=None)
        return self._status(env, record)

    def url(self, env: str) -> str:
        return self._record(env).url

    def stats(self, env: str) -> dict[str, Any]:
        record = self._record(env)
        try:
            answer = httpx.get(f"{record.url}/admin/stats", headers=_auth(record), timeout=STATS_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise BackendError(
                f"the serving host of '{env}' did not give its stats: {exc}", details={"environment": env}
            ) from exc
        if answer.status_code != 200:
            raise BackendError(
                f"the serving host of '{env}' did not give its stats ({answer.status_code})",
                details={"environment": env},
            )
        return _json(answer)

    # --- processes ----------------------------------------------------------------------------

    def _spawn(self, env: Environment, port: int, restarts: int) -> HostRecord:
        log_path = self._settings.logs_dir / f"serving-{env.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
        child_env[ADMIN_TOKEN_ENV] = token
        command = [
            self._python,
            "-m",
            "mlgate.serving",
            "--state-dir",
            str(env.serving_dir / STATE_DIR),
            "--port",
            str(port),
            "--monitoring-dir",
            str(env.monitoring_dir),
            *self._options,
        ]
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                start_new_session=True,
            )
        record = HostRecord(
            handle=handle(process.pid),
            port=port,
            token=token,
            restarts=restarts,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        record.write(record_path(env))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answering(record):
            if process.poll() is not None or time.monotonic() > deadline:
                self._kill(record)
                record.handle = None
                record.write(record_path(env))
                raise BackendError(
                    f"the serving host of '{env.name}' did not start on port {port}; see {log_path}",
                    details={"environment": env.name, "log": _tail(log_path)},
                )
            time.sleep(0.1)
        log.info("serving host of %s started (pid %s) at %s", env.name, process.pid, record.url)
        return record

    def _answering(self, record: HostRecord) -> bool:
        try:
            return httpx.get(f"{record.url}/admin/spec", headers=_auth(record), timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_answering(self, record: HostRecord, *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self._answering(record):
            if time.monotonic() > deadline or record.handle is None or not handle_alive(record.handle):
                return False
            time.sleep(0.2)
        return True

    def _kill(self, record: HostRecord) -> None:
        from mlgate.adapters.mlflow.tracking_servers import kill_group

        if record.handle and handle_alive(record.handle) and record.pid is not None:
            kill_group(record.pid, grace_s=5.0)

    def _status(self, env: str, record: HostRecord) -> HostStatus:
        running = record.handle is not None and handle_alive(record.handle)
        applied = None
        if running:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = httpx.get(f"{record.url}/admin/spec", headers=_auth(record), timeout=5.0)
                if answer.status_code == 200:
                    applied = answer.json().get("spec")
        return HostStatus(
            environment=env,
            url=record.url,
            pid=record.pid,
            running=running,
            restarts=record.restarts,
            started_at=record.started_at,
            applied=applied,
        )

    def _env(self, env: str) -> Environment:
        if env not in self._envs:
            raise NotFoundError(f"unknown environment '{env}'", details={"environment": env})
        return self._envs[env]

    def _record(self, env: str) -> HostRecord:
        record = HostRecord.read(record_path(self._env(env)))
        if record is None or record.handle is None:
            raise BackendError(f"the serving host of '{env}' is not running", details={"environment": env})
        return record


def _auth(record: HostRecord) -> dict[str, str]:
    return {"Authorization": f"Bearer {record.token}"}


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the host binds it: a port whose old connections linger in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
