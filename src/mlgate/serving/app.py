"""The serving host's ASGI app: each route to its handler, every error in the protocol's shape, the lifespan.

The parts it wires together, each in its own module: the live deployments (`state`), the scoring hot path
(`scoring`), the MLflow and Open Inference Protocol shapes (`protocols`), ground truth (`feedback`), the
admin API on the Unix socket (`admin`) and the request log (`recording`). ``/metrics`` (to the holder of
a metrics token whose SHA-256 the spec names) and ``/health`` are answered here.

Scoring and ground truth on the TCP port take at most `max_concurrency` requests in flight (per process);
one more is answered 503 with `Retry-After`, in its protocol's shape, before its body is read. The admin
socket's requests are never refused. What a connection may take before its request reaches the app
(deadlines, the connection limit) is `mlgate.serving.connections`'.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.serving.admin import Admin
from mlgate.serving.asgi import (
    DEFAULT_MAX_BODY_BYTES,
    Handler,
    Receive,
    Request,
    Scope,
    Send,
    presents,
    send_bytes,
    send_error,
    send_json,
)
from mlgate.serving.errors import AuthError, Busy, NotFound, ServingError
from mlgate.serving.feedback import Feedback
from mlgate.serving.listeners import ConnectionPolicy, on_admin_socket
from mlgate.serving.metrics import Metrics, render_recording
from mlgate.serving.protocols import Protocols
from mlgate.serving.recording import RequestLog
from mlgate.serving.scoring import Scorer
from mlgate.serving.spec import Batching
from mlgate.serving.state import Deployments

if TYPE_CHECKING:
    from mlgate.serving.workers import WorkerSync

log = logging.getLogger("mlgate.serving")


class ServingHost:
    def __init__(
        self,
        *,
        state_dir: Path,
        admin_token: str,
        batching: Batching | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        sync: WorkerSync | None = None,
        monitoring_dir: Path | None = None,
        max_concurrency: int = ConnectionPolicy.max_concurrency,
    ) -> None:
        # What was scored, for monitoring: queued here, written to Parquet by a background thread.
        self.request_log = RequestLog(monitoring_dir) if monitoring_dir is not None else None
        self.metrics = Metrics()
        self.deployments = Deployments(
            state_dir=state_dir, batching=batching or Batching(), metrics=self.metrics, request_log=self.request_log
        )
        scorer = Scorer(
            deployments=self.deployments,
            metrics=self.metrics,
            request_log=self.request_log,
            max_body_bytes=max_body_bytes,
        )
        self._protocols = Protocols(scorer=scorer, deployments=self.deployments)
        self._feedback = Feedback(scorer=scorer, request_log=self.request_log, max_body_bytes=max_body_bytes)
        self._admin = Admin(
            token=admin_token,
            deployments=self.deployments,
            metrics=self.metrics,
            sync=sync,
            max_body_bytes=max_body_bytes,
        )
        self._sync = sync  # one worker of several (see mlgate.serving.workers); None: the only process
        self._max_concurrency = max_concurrency
        self._in_flight = 0  # scoring and ground-truth requests on the TCP port being answered
        self._health: dict[str, Any] = {"status": "ok", **(sync.identity() if sync is not None else {})}

    @property
    def spec_sha256(self) -> str | None:
        """The sha256 of the canonical JSON of the spec in force; None before the first one."""
        return self.deployments.spec_sha256

    async def apply(self, raw: Any, *, persist: bool = True) -> str:
        """Apply a deployment spec (see `Deployments.apply`); returns the sha256 of its canonical JSON."""
        return await self.deployments.apply(raw, persist=persist)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope)
        path, method = request.path, request.method
        if path.startswith("/endpoints/") and path.endswith("/feedback"):
            name = path[len("/endpoints/") : -len("/feedback")]
            await self._limited(self._feedback, name, request, receive, send, scope, v2=False, allowed=("POST",))
        elif path.startswith("/endpoints/") and path.endswith("/invocations"):
            name = path[len("/endpoints/") : -len("/invocations")]
            invocations = self._protocols.invocations
            await self._limited(invocations, name, request, receive, send, scope, v2=False, allowed=("POST",))
        elif path.startswith("/v2"):
            v2 = self._protocols.v2
            await self._limited(v2, path, request, receive, send, scope, v2=True, allowed=("GET", "POST"))
        elif path == "/metrics":
            await self._guard(self._metrics, path, request, receive, send, v2=False, allowed=("GET",))
        elif path in ("/ping", "/health") and method == "GET":
            await send_json(send, request, 200, self._health)
        elif path == "/admin/spec" and on_admin_socket(scope):  # on the TCP port: an unknown route
            await self._guard(self._admin.spec, path, request, receive, send, v2=False, allowed=("GET", "PUT"))
        elif path == "/admin/stats" and on_admin_socket(scope):
            await self._guard(self._admin.stats, path, request, receive, send, v2=False, allowed=("GET",))
        else:
            await send_error(send, request, NotFound(f"no route {method} {path}"), v2=False)

    async def _guard(
        self,
        handler: Handler,
        arg: str,
        request: Request,
        receive: Receive,
        send: Send,
        *,
        v2: bool,
        allowed: tuple[str, ...],
    ) -> None:
        """Run a handler; every error becomes the protocol's error shape, input errors never a 500."""
        if request.method not in allowed:
            error = ServingError(
                f"method {request.method} not allowed on {request.path}", status=405, code="BAD_REQUEST"
            )
            await send_error(send, request, error, v2=v2)
            return
        try:
            await handler(arg, request, receive, send)
        except ServingError as exc:
            await send_error(send, request, exc, v2=v2)
        except Exception as exc:  # a bug or a model failure: answer, log, keep serving
            log.exception("request %s failed", request.request_id)
            await send_error(send, request, ServingError(f"internal error: {exc}"), v2=v2)

    async def _limited(
        self,
        handler: Handler,
        arg: str,
        request: Request,
        receive: Receive,
        send: Send,
        scope: Scope,
        *,
        v2: bool,
        allowed: tuple[str, ...],
    ) -> None:
        """`_guard`, counted against the concurrency limit when the request came in on the TCP port."""
        if on_admin_socket(scope):
            await self._guard(handler, arg, request, receive, send, v2=v2, allowed=allowed)
            return
        if self._in_flight >= self._max_concurrency:
            busy = Busy(f"the host is answering {self._max_concurrency} requests already; retry in a second")
            await send_error(send, request, busy, v2=v2)
            return
        self._in_flight += 1
        try:
            await self._guard(handler, arg, request, receive, send, v2=v2, allowed=allowed)
        finally:
            self._in_flight -= 1

    async def _metrics(self, _: str, request: Request, receive: Receive, send: Send) -> None:
        """The host's metrics (with several workers, theirs added up), then the request log's counters, for
        the holder of a metrics token."""
        hashes = self.deployments.current.metrics_token_hashes
        if not hashes:
            raise AuthError("this host has no metrics token (the server sets it from serving.metrics_token_env)")
        if not presents(request, hashes):
            raise AuthError("missing or wrong metrics token: send 'Authorization: Bearer <metrics token>'")
        body = self.metrics.render() if self._sync is None else self._sync.render_metrics()
        if self.request_log is not None:
            body += render_recording(self.request_log.stats())
        await send_bytes(send, request, 200, body, b"text/plain; version=0.0.4")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.request_log is not None:
                    self.request_log.start()
                if self._sync is None:
                    await self.deployments.restore()
                else:  # restores the saved spec too, then follows the one the other workers save
                    await self._sync.start(self)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sync is not None:
                    await self._sync.stop()
                await self.deployments.close()
                if self.request_log is not None:
                    await asyncio.to_thread(self.request_log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return
