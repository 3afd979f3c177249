"""The control plane's HTTP to the tracking servers, sent over their Unix sockets.

Why: the tracking servers listen on Unix sockets in a private folder (see `mlgate.sockets`), not on
loopback TCP, where any local process (a sandboxed job shares the network) could write the
production registry. An environment's server is named by a pseudo URL, `http://mlflow-<env>.mlgate.invalid`
(`.invalid` never resolves, RFC 2606: a request that misses the routes below fails; it never reaches
another server), and `route` maps that host to the socket.

Two clients use the routes:

- the door's httpx client, through `AsyncUnixRoutes`, a transport built for the purpose;
- MLflow's own Python client (registry, promotion copies, aliases, artifact up- and downloads of
  `mlflow-artifacts:` URIs), which has no transport hook: it sends everything through the `requests`
  session of `mlflow.utils.request_utils._get_request_session`. `install` wraps that function once per
  process (when the first `MlflowRegistry` is made: importing MLflow costs seconds, so not at start), so
  that every session it hands out also carries a `UnixSocketAdapter` for each routed host.
  This is the one place that touches MLflow's internals; tests/contract/test_unix_transport.py fails if MLflow
  changes so that the hook no longer applies.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from requests import PreparedRequest, Session
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import NewConnectionError

PSEUDO_DOMAIN = "mlgate.invalid"
_HOOK_MARK = "_mlgate_unix_routes"

_lock = threading.Lock()
_routes: dict[str, str] = {}  # pseudo host -> socket path


def pseudo_host(env: str) -> str:
    return f"mlflow-{env}.{PSEUDO_DOMAIN}"


def route(env: str, socket_path: Path) -> str:
    """Send HTTP for `env`'s pseudo host over `socket_path`; returns the pseudo URL (idempotent)."""
    host = pseudo_host(env)
    with _lock:
        _routes[host] = str(socket_path)
    return f"http://{host}"


def socket_for(host: str) -> str | None:
    with _lock:
        return _routes.get(host)


# --- requests (MLflow's client) -------------------------------------------------------------------


class _UnixConnection(HTTPConnection):
    """An HTTP/1.1 connection whose socket is a Unix one; host and port only fill the Host header."""

    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if isinstance(self.timeout, int | float):
            sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:  # as a refused TCP connection: requests retries it, then raises
            sock.close()
            raise NewConnectionError(self, f"cannot connect to {self.socket_path}: {exc}") from exc
        return sock


class _UnixPool(HTTPConnectionPool):
    ConnectionCls = _UnixConnection


class UnixSocketAdapter(HTTPAdapter):
    """A requests transport adapter that sends every request for `host` over one Unix socket."""

    def __init__(self, socket_path: str, *, host: str, **kwargs: Any) -> None:
        self.socket_path = socket_path
        super().__init__(**kwargs)
        # `host` is never resolved (the connection dials the socket); it is the Host header sent.
        self._unix_pool = _UnixPool(host, maxsize=self._pool_maxsize, socket_path=socket_path)

    def get_connection_with_tls_context(
        self, request: PreparedRequest, verify: bool | str | None, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        return self._unix_pool

    def get_connection(self, url: Any, proxies: Any = None) -> HTTPConnectionPool:  # older requests
        return self._unix_pool

    def request_url(self, request: PreparedRequest, proxies: Any) -> str:
        return request.path_url  # never a proxy's absolute form: there is no proxy on a socket

    def close(self) -> None:
        super().close()
        self._unix_pool.close()


def _mount(session: Session) -> None:
    """Give a session (MLflow caches them, per process) an adapter for every routed host it lacks."""
    with _lock:
        for host, path in _routes.items():
            prefix = f"http://{host}/"
            current = session.adapters.get(prefix)
            if isinstance(current, UnixSocketAdapter) and current.socket_path == path:
                continue
            base = session.adapters.get("http://")
            retries = base.max_retries if isinstance(base, HTTPAdapter) else 0
            session.mount(prefix, UnixSocketAdapter(path, host=host, max_retries=retries))


def install() -> None:
    """Wrap MLflow's request-session factory so its sessions reach the routed hosts (once per process)."""
    from mlflow.utils import request_utils

    with _lock:
        original: Callable[..., Session] = request_utils._get_request_session
        if getattr(original, _HOOK_MARK, False):
            return

        @functools.wraps(original)
        def session_with_unix_routes(*args: Any, **kwargs: Any) -> Session:
            session = original(*args, **kwargs)
            _mount(session)
            return session

        setattr(session_with_unix_routes, _HOOK_MARK, True)
        request_utils._get_request_session = session_with_unix_routes


# --- httpx (the door, health checks) --------------------------------------------------------------


class AsyncUnixRoutes(httpx.AsyncBaseTransport):
    """An httpx transport: routed hosts over their sockets, any other URL as usual (tests' fakes)."""

    def __init__(self) -> None:
        self._by_socket: dict[str, httpx.AsyncHTTPTransport] = {}
        self._default = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = socket_for(request.url.host)
        if path is None:
            return await self._default.handle_async_request(request)
        transport = self._by_socket.get(path)
        if transport is None:
            transport = self._by_socket[path] = httpx.AsyncHTTPTransport(uds=path)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in [self._default, *self._by_socket.values()]:
            await transport.aclose()
