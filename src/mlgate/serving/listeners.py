"""The serving host's two listening sockets: scoring on TCP, the admin API on a Unix socket.

Scoring (`/endpoints/...`, `/v2/...`, `/metrics`, `/health`) answers on 127.0.0.1:<port>, which any
local process may reach. The admin API (`/admin/spec`, `/admin/stats`) answers only on the Unix socket,
in a folder only the control plane (and this host) can reach; on the TCP port `/admin/...` is an unknown
route. The admin token is still checked on the socket: defence in depth.

Both sockets are bound here, once, by the process that owns the host (the only process, or the
supervisor of `--workers N`, which passes both to its workers as file descriptors). What one connection
may take of a host is `ConnectionPolicy`'s, enforced by `mlgate.serving.connections` and the app.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKLOG = 2048


@dataclass(frozen=True)
class ConnectionPolicy:
    """What callers on the TCP port may take of one host process (each worker of `--workers N` has its own):
    how long a request's headers and its body may take to arrive, how many connections may be open and how
    many requests in flight. The defaults are `serving`'s in mlgate.yaml (`mlgate.config.schema`)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 512  # under the usual 1024 open files, with room for the models' own
    max_concurrency: int = 128


def listen_tcp(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port (SO_REUSEADDR: old connections in TIME_WAIT do not block it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def listen_unix(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, owner-only; a stale socket file there is removed first."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def remove_socket_file(path: Path) -> None:
    """Remove the admin socket's file when the host ends (only if it is still a socket)."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()


def on_admin_socket(scope: Mapping[str, Any]) -> bool:
    """Whether an ASGI request came in on the Unix socket: uvicorn gives a Unix listener's `server`
    as (path, None) and a TCP one's as (address, port). A request of unknown origin is not admin."""
    server = scope.get("server")
    return isinstance(server, tuple | list) and len(server) == 2 and server[1] is None
