"""The `local` serving backend: one detached `python -m mlgate.serving` process per environment.

A host runs in its own session, so restarting the server does not interrupt scoring. It runs in the
sandbox (`mlgate.sandbox`, bwrap by default): it sees its environment's placed model folders read-only,
its state, monitoring and admin-socket folders read-write, and nothing else of the home; it gets only the
environment variables `_host_env` names. It scores on 127.0.0.1:<port> and answers its admin API (push,
spec, stats) only on a Unix socket in its private folder `<run>/serving-<env>/` (`mlgate.sockets`),
which is what this backend talks to.

What a later server needs to adopt it is in `envs/<env>/serving/host.json` (owner-only): its
`pid:start-time` handle, port, admin socket and admin token. A host is adopted when that process still
runs and answers its admin API with that token; otherwise a new one starts on the same port (a
configured port, or the one first picked) and restores its last applied spec from its state folder
before the server pushes the authoritative one.
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
from mlgate.sandbox import Limits, Mount, Wrapped, from_settings
from mlgate.sockets import host_socket

log = logging.getLogger(__name__)

RECORD_FILE = "host.json"
STATE_DIR = "state"
START_TIMEOUT_S = 60.0
PUSH_TIMEOUT = httpx.Timeout(300.0, connect=5.0)  # loading and warming up models takes its time
STATS_TIMEOUT_S = 10.0
PORT_RELEASE_WAIT_S = 5.0
ADMIN_TOKEN_ENV = "MLGATE_HOST_ADMIN_TOKEN"  # noqa: S105 - the variable's name
ADMIN_URL = "http://serving-host.mlgate.invalid"  # the admin API's URL over its socket (never resolved)
# What a host inherits of the server's environment: locale and the numeric libraries' thread settings.
PASSED_ENV_PREFIXES = ("LANG", "LC_", "OPENBLAS_", "OMP_")


@dataclass
class HostRecord:
    handle: str | None
    port: int
    token: str
    restarts: int = 0
    started_at: str | None = None
    admin_socket: str | None = None  # None: a host started before the admin API moved to a socket

    @property
    def pid(self) -> int | None:
        return parse_handle(self.handle)[0] if self.handle else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, timeout: float | httpx.Timeout) -> httpx.Client:
        """A client of the host's admin API, over its Unix socket, with the admin token."""
        if self.admin_socket is None:
            raise httpx.ConnectError("this host's record names no admin socket")
        return httpx.Client(
            base_url=ADMIN_URL,
            transport=httpx.HTTPTransport(uds=self.admin_socket),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=timeout,
        )

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
                admin_socket=raw.get("admin_socket"),
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

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalServingBackend:
        return cls(settings)

    def __init__(self, settings: Settings, *, python: str = sys.executable) -> None:
        self._settings = settings
        self._python = python
        self._envs = {env.name: env for env in settings.environments}
        self._sandbox = from_settings(settings)
        # A host serves for weeks: the policy's CPU-time limit (meant for a job) would kill it; memory
        # and process limits apply as to every sandboxed process.
        self._limits = Limits(memory_bytes=self._sandbox.limits.memory_bytes, processes=self._sandbox.limits.processes)
        serving = settings.serving
        self._options = [
            "--max-batch-size",
            str(serving.max_batch_size),
            "--max-wait-ms",
            str(serving.max_wait_ms),
            "--max-body-bytes",
            str(serving.max_body_bytes),
            "--header-timeout-s",
            str(serving.header_timeout_s),
            "--body-timeout-s",
            str(serving.body_timeout_s),
            "--max-connections",
            str(serving.max_connections),
            "--max-concurrency",
            str(serving.max_concurrency),
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
        port = env.serving_port or (record.port if record is not None and _port_freed(record.port) else free_port())
        record = self._spawn(env, port, restarts)
        return self._status(env.name, record), True

    def push(self, env: str, spec: dict[str, Any]) -> dict[str, Any]:
        record = self._record(env)
        try:
            with record.admin(PUSH_TIMEOUT) as admin:
                answer = admin.put("/admin/spec", json=spec)
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
            with record.admin(STATS_TIMEOUT_S) as admin:
                answer = admin.get("/admin/stats")
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
        self._sandbox.check()  # SandboxUnavailable (a ConfigError) as it is: the policy asks for what is not here
        log_path = self._settings.logs_dir / f"serving-{env.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        admin_socket = host_socket(self._settings.home, env.name)
        state_dir = env.serving_dir / STATE_DIR
        wrapped = self._sandboxed(env, port, admin_socket, token)
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                wrapped.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=wrapped.env,
                cwd=state_dir,
                start_new_session=True,
            )
        record = HostRecord(
            handle=handle(process.pid),
            port=port,
            token=token,
            restarts=restarts,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            admin_socket=str(admin_socket),
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

    def _sandboxed(self, env: Environment, port: int, admin_socket: Path, token: str) -> Wrapped:
        """The host's command line, wrapped in the sandbox with its mounts and environment."""
        state_dir = env.serving_dir / STATE_DIR
        for folder in (state_dir, env.monitoring_dir):
            folder.mkdir(parents=True, exist_ok=True)
        command = [
            self._python,
            "-m",
            "mlgate.serving",
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            "--admin-socket",
            str(admin_socket),
            "--monitoring-dir",
            str(env.monitoring_dir),
            *self._options,
        ]
        # env.serving_dir holds the placed model folders (<digest>/) and host.json, read-only: the host
        # can read its own admin token there, which it holds anyway (it is in its environment).
        mounts = [
            Mount(env.serving_dir),
            Mount(state_dir, writable=True),
            Mount(env.monitoring_dir, writable=True),
            Mount(admin_socket.parent, writable=True),  # 0700 (mlgate.sockets): the host must listen there
        ]
        return self._sandbox.wrap(
            command,
            env=self._host_env(token),
            mounts=mounts,
            workdir=state_dir,
            limits=self._limits,
            die_with_parent=False,  # hosts outlive the server; `kill_group` stops them gracefully
        )

    def _host_env(self, token: str) -> dict[str, str]:
        """All a host gets of the environment: PATH (the venv first), locale, thread settings, its token."""
        path = os.pathsep.join([str(Path(self._python).parent), "/usr/local/bin", "/usr/bin", "/bin"])
        passed = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
        return {**passed, "PATH": path, ADMIN_TOKEN_ENV: token}

    def _answering(self, record: HostRecord) -> bool:
        try:
            with record.admin(2.0) as admin:
                return admin.get("/admin/spec").status_code == 200
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
            with contextlib.suppress(httpx.HTTPError, ValueError), record.admin(5.0) as admin:
                answer = admin.get("/admin/spec")
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


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _port_freed(port: int, *, wait_s: float = PORT_RELEASE_WAIT_S) -> bool:
    """Whether the port is free, or becomes free within `wait_s`: a host whose keeper just died is still
    being torn down (its sandbox dies with the keeper, a few milliseconds later) and holds the port."""
    deadline = time.monotonic() + wait_s
    while not _port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


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
