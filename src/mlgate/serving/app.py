"""The serving host's ASGI app: each route to its handler, every error in the protocol's shape, the lifespan.

The parts it wires together, each in its own module: the live deployments (`state`), the scoring hot path
(`scoring`), the MLflow and Open Inference Protocol shapes (`protocols`), ground truth (`feedback`), the
admin API on the Unix socket (`admin`) and the request log (`recording`). ``/metrics`` and ``/health``
are answered here.
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
    send_bytes,
    send_error,
    send_json,
)
from mlgate.serving.errors import NotFound, ServingError
from mlgate.serving.feedback import Feedback
from mlgate.serving.listeners import on_admin_socket
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
            await self._guard(self._feedback, name, request, receive, send, v2=False, allowed=("POST",))
        elif path.startswith("/endpoints/") and path.endswith("/invocations"):
            name = path[len("/endpoints/") : -len("/invocations")]
            await self._guard(self._protocols.invocations, name, request, receive, send, v2=False, allowed=("POST",))
        elif path.startswith("/v2"):
            await self._guard(self._protocols.v2, path, request, receive, send, v2=True, allowed=("GET", "POST"))
        elif path == "/metrics" and method == "GET":
            await send_bytes(send, request, 200, self._metrics_text(), b"text/plain; version=0.0.4")
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

    def _metrics_text(self) -> bytes:
        """The host's metrics (with several workers, theirs added up), then the request log's counters."""
        body = self.metrics.render() if self._sync is None else self._sync.render_metrics()
        if self.request_log is not None:
            body += render_recording(self.request_log.stats())
        return body

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
