"""One MLflow tracking server per environment on a Unix socket, started and supervised by mlgate's server.

Each serves its environment's artifacts (`--serve-artifacts`) from that environment's root and listens
on `mlflow-<env>.sock` in the home's private socket folder (`mlgate.sockets`), never on TCP: nobody
reaches it except the control plane, whose clients (the `/mlflow/<env>/` door, MLflow's Python client)
name it by the pseudo URL `upstream(env)` that `unix_transport` routes to the socket.

A server starts on demand: `upstream(env)` starts that environment's server the first time it is asked
for and returns once the server answers, so a control plane whose production MLflow is never touched
never pays for it. A supervisor thread restarts a started server that died, on the same socket.

Each server runs with its own `HOME` (and XDG folders) under its environment's folder,
`envs/<env>/mlflow-home/`, and none of the server's `MLFLOW_*` variables: what one environment's MLflow
writes under `~` (`~/.mlflow`, the assistant's configuration, caches) is never read by another's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlgate.adapters.mlflow import unix_transport
from mlgate.config import Environment, Settings
from mlgate.errors import BackendError, NotFoundError
from mlgate.sockets import remove_stale, tracking_socket

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
SUPERVISE_INTERVAL_S = 2.0
STOP_GRACE_S = 10.0
HOME_FOLDER = "mlflow-home"  # under envs/<env>/: the tracking server's HOME
HOME_MODE = 0o700
# MLflow variables the server's own environment may pass on: opt-outs, which point MLflow nowhere
INHERITED_MLFLOW = frozenset({"MLFLOW_DISABLE_TELEMETRY"})


@dataclass
class _Server:
    env: Environment
    socket: Path
    upstream: str  # the pseudo URL unix_transport routes to `socket`
    log_path: Path
    home: Path  # the server's own HOME, inside its environment's folder
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    ready: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def kill_group(pid: int, *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM a process group, then SIGKILL it if it is still there after the grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not _group_running(pid):
            return  # only zombies left (a sandboxed host's bwrap, reaped later by its parent): it has ended
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class LocalTrackingServers:
    """`mlflow server` subprocesses, one per environment, each in its own process group."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalTrackingServers:
        return cls(settings)

    def __init__(self, settings: Settings, *, python: str = sys.executable) -> None:
        self._python = python
        self._on_spawn: Callable[[], None] | None = None
        self._servers = {}
        for env in settings.environments:
            path = tracking_socket(settings.home, env.name)
            self._servers[env.name] = _Server(
                env=env,
                socket=path,
                upstream=unix_transport.route(env.name, path),
                log_path=settings.logs_dir / f"mlflow-{env.name}.log",
                home=settings.env_dir(env.name) / HOME_FOLDER,
            )
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _command(self, server: _Server) -> list[str]:
        return [
            self._python,
            "-m",
            "mlgate.adapters.mlflow.tracking_host",
            # uvicorn chmods the socket 0666: the folder's 0700 is what keeps others out
            "--uds",
            str(server.socket),
            # the Host header our clients send: the pseudo host of `upstream`
            "--allowed-host",
            unix_transport.pseudo_host(server.env.name),
            "--backend-store-uri",
            server.env.tracking_store,
            "--artifacts-destination",
            str(server.env.artifact_root),
        ]

    def _spawn(self, server: _Server) -> None:
        server.log_path.parent.mkdir(parents=True, exist_ok=True)
        server.env.artifact_root.mkdir(parents=True, exist_ok=True)
        remove_stale(server.socket)  # a server killed hard leaves its socket file behind
        with server.log_path.open("ab") as out:
            server.process = subprocess.Popen(
                self._command(server),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_environment(server.home),
                start_new_session=True,
            )
        server.started_at, server.ready = time.monotonic(), False
        if self._on_spawn is not None:
            self._on_spawn()

    def _healthy(self, server: _Server) -> bool:
        if not server.socket.exists():  # not listening yet (and httpcore leaks a socket on that refusal)
            return False
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(server.socket)), timeout=2.0) as client:
                return client.get(f"{server.upstream}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _wait_ready(self, servers: list[_Server]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(servers)
        while pending:
            for server in list(pending):
                assert server.process is not None
                if server.process.poll() is not None:
                    raise BackendError(
                        f"the MLflow tracking server of '{server.env.name}' exited with code "
                        f"{server.process.returncode}; see {server.log_path}",
                        details={"environment": server.env.name, "log": _tail(server.log_path)},
                    )
                if self._healthy(server):
                    server.ready = True
                    pending.remove(server)
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.env.name for s in pending)
                raise BackendError(f"MLflow tracking servers did not start in time: {names}")
            if pending:
                time.sleep(0.3)

    def start(self, on_spawn: Callable[[], None] | None = None) -> None:
        """Start the supervisor; each server starts at its environment's first `upstream`."""
        self._on_spawn = on_spawn
        self._supervisor = threading.Thread(target=self._supervise, name="mlflow-supervisor", daemon=True)
        self._supervisor.start()

    def _ensure_running(self, server: _Server) -> None:
        process = server.process
        if server.ready and process is not None and process.poll() is None:
            return
        with server.lock:
            if self._stopping.is_set():
                raise BackendError(
                    f"the MLflow tracking server of '{server.env.name}' is stopping with the server",
                    details={"environment": server.env.name},
                )
            if server.process is None:
                log.info("starting the MLflow tracking server of %s", server.env.name)
                self._spawn(server)
        self._wait_ready([server])

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_INTERVAL_S):
            for server in self._servers.values():
                with server.lock:
                    if self._stopping.is_set() or server.process is None:
                        continue
                    if server.process.poll() is not None:
                        log.warning(
                            "MLflow tracking server of %s exited with %s; restarting it",
                            server.env.name,
                            server.process.returncode,
                        )
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(server.process.pid, signal.SIGKILL)
                        server.restarts += 1
                        self._spawn(server)
                    elif not server.ready:
                        server.ready = self._healthy(server)

    def stop(self) -> None:
        self._stopping.set()
        running = [s.process for s in self._servers.values() if s.process is not None]
        for process in running:  # all at once: they shut down in parallel
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # whatever is left of the group (a worker that outlived its parent) goes now
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def upstream(self, env: str) -> str:
        server = self._servers.get(env)
        if server is None:
            raise NotFoundError(f"unknown environment '{env}'", details={"environment": env})
        self._ensure_running(server)
        return server.upstream

    def ready_upstream(self, env: str) -> str | None:
        server = self._servers.get(env)
        if server is None or not server.ready or server.process is None or server.process.poll() is not None:
            return None
        return server.upstream

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "started": s.process is not None,
                "pid": s.process.pid if s.process else None,
                "socket": str(s.socket),
                "ready": s.ready and s.process is not None and s.process.poll() is None,
                "restarts": s.restarts,
            }
            for name, s in self._servers.items()
        }


def server_environment(home: Path) -> dict[str, str]:
    """A tracking server's variables: the server's own, without what points MLflow elsewhere, with `home`
    (made 0700 if missing) as its HOME and XDG folders."""
    home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    os.chmod(home, HOME_MODE)  # an older or loosened one: this folder is the server's alone
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") or k in INHERITED_MLFLOW}
    env |= {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # tracking_host sets it too, before MLflow loads
    }
    return env


def _group_running(pgid: int) -> bool:
    """Whether a process of the group still runs (is not a zombie); True when /proc cannot tell."""
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return True
    for name in entries:
        try:
            with open(f"/proc/{name}/stat") as stat:
                state, _, group = stat.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
