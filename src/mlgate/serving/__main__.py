"""``python -m mlgate.serving --state-dir DIR --port N [--admin-socket PATH] [--workers W]``: one serving host.

Scoring answers on 127.0.0.1:N; the admin API (``/admin/spec``, ``/admin/stats``) only on the Unix socket
``--admin-socket`` (default: ``admin.sock`` beside the state folder), see ``mlgate.serving.listeners``.
The admin token it also checks comes from ``MLGATE_HOST_ADMIN_TOKEN``. With ``--workers`` above 1 this
process supervises that many worker processes on both sockets (see ``mlgate.serving.workers``); each
loads every model. ``--header-timeout-s``, ``--body-timeout-s``, ``--max-connections`` and
``--max-concurrency`` bound what callers may take of each process (``mlgate.serving.connections``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.serving.listeners import ConnectionPolicy

if TYPE_CHECKING:
    import uvicorn

ADMIN_TOKEN_ENV = "MLGATE_HOST_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return number


def _connection_options(parser: argparse.ArgumentParser) -> None:
    default = ConnectionPolicy()
    parser.add_argument(
        "--header-timeout-s", type=_seconds, default=default.header_timeout_s, help="for a request's headers"
    )
    parser.add_argument("--body-timeout-s", type=_seconds, default=default.body_timeout_s, help="for its body")
    parser.add_argument("--max-connections", type=_positive, default=default.max_connections, help="per process")
    parser.add_argument(
        "--max-concurrency", type=_positive, default=default.max_concurrency, help="requests in flight, per process"
    )


def connection_policy(args: argparse.Namespace) -> ConnectionPolicy:
    return ConnectionPolicy(
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        max_connections=args.max_connections,
        max_concurrency=args.max_concurrency,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlgate.serving", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="where the last applied spec is kept")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--admin-socket", type=Path, help="the Unix socket of the admin API (default: <state-dir>/../admin.sock)"
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="rows per model call (the spec may override)")
    parser.add_argument(
        "--max-wait-ms", type=float, default=0.0, help="how long a batch waits for company (0: batch what is queued)"
    )
    parser.add_argument("--max-body-bytes", type=int, default=5 * 1024 * 1024)
    parser.add_argument("--workers", type=_positive, default=1, help="worker processes sharing the port")
    parser.add_argument(
        "--monitoring-dir", type=Path, help="record scored requests there (Parquet) and accept ground truth"
    )
    _connection_options(parser)
    parser.add_argument("--log-level", default="warning")
    # Given by the supervisor of --workers W > 1 to each worker it starts.
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admin-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.admin_socket is None:
        args.admin_socket = args.state_dir.parent / "admin.sock"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if len(token) < 16:
        print(f"error: set {ADMIN_TOKEN_ENV} to the admin token (at least 16 characters)", file=sys.stderr)
        return 2
    worker = args.listen_fd is not None
    who = f" worker {args.worker_index}" if worker else ""
    logging.basicConfig(level=args.log_level.upper(), format=f"%(asctime)s{who} %(name)s %(levelname)s %(message)s")
    if args.workers > 1 and not worker:
        return _supervise(args, sys.argv[1:] if argv is None else argv)
    # Models fitted on a DataFrame warn on every plain-array predict; the columns are in signature order.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    # The hot path allocates many short-lived objects; fewer young-generation collections cut tail latency.
    gc.set_threshold(50_000, 20, 100)
    return _serve(args, token, worker=worker)


def _serve(args: argparse.Namespace, token: str, *, worker: bool) -> int:
    """Run one host: the only process, or (``worker``) one worker on the supervisor's sockets."""
    import uvicorn

    from mlgate.serving.app import ServingHost
    from mlgate.serving.connections import guarded_protocol
    from mlgate.serving.spec import Batching
    from mlgate.serving.state import SPEC_FILE

    sync = None
    if worker:
        from mlgate.serving.workers import WorkerSync, die_with_parent

        if not die_with_parent(args.parent_pid):
            return 0
        sync = WorkerSync(
            state_dir=args.state_dir,
            spec_file=SPEC_FILE,
            index=args.worker_index,
            count=args.workers,
            parent_pid=args.parent_pid,
        )
    host = ServingHost(
        state_dir=args.state_dir,
        admin_token=token,
        batching=Batching(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms),
        max_body_bytes=args.max_body_bytes,
        sync=sync,
        monitoring_dir=args.monitoring_dir,
        max_concurrency=args.max_concurrency,
    )
    options: dict[str, Any] = {
        "log_level": args.log_level,
        "access_log": False,
        "lifespan": "on",
        "loop": "auto",
        "http": guarded_protocol(connection_policy(args)),  # httptools, with deadlines and a connection limit
        "ws": "none",  # the host speaks no WebSocket: an upgrade is an ordinary request
    }
    server = uvicorn.Server(uvicorn.Config(host, **options))
    if worker:  # the supervisor's sockets, already listening
        server.run(sockets=[socket.socket(fileno=args.listen_fd), socket.socket(fileno=args.admin_fd)])
        return 0
    return _listen_and_run(server, args)


def _listen_and_run(server: uvicorn.Server, args: argparse.Namespace) -> int:
    """Bind the port and the admin socket, serve until stopped, then remove the socket file."""
    from mlgate.serving.listeners import listen_tcp, listen_unix, remove_socket_file

    try:
        sockets = [listen_tcp(args.port), listen_unix(args.admin_socket)]
    except OSError as exc:
        logging.getLogger("mlgate.serving").error("cannot listen (port %d, %s): %s", args.port, args.admin_socket, exc)
        return 1
    try:
        server.run(sockets=sockets)
    finally:
        remove_socket_file(args.admin_socket)
    return 0


def _supervise(args: argparse.Namespace, argv: list[str]) -> int:
    from mlgate.serving.workers import supervise

    def command(index: int, fd: int, admin_fd: int) -> list[str]:
        hidden = ["--worker-index", str(index), "--listen-fd", str(fd), "--admin-fd", str(admin_fd)]
        return [sys.executable, "-m", "mlgate.serving", *argv, *hidden, "--parent-pid", str(os.getpid())]

    return supervise(
        state_dir=args.state_dir,
        port=args.port,
        admin_socket=args.admin_socket,
        workers=args.workers,
        command=command,
    )


if __name__ == "__main__":
    sys.exit(main())
