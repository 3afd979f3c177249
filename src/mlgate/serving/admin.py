"""The admin API the control plane calls on the host's Unix socket: its token, the spec pushed and read, the stats.

`mlgate.serving.app` routes `/admin/*` here only for requests that came in on the Unix socket (see
`mlgate.serving.listeners`); the admin token is checked here too.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

from mlgate.serving.asgi import Receive, Request, Send, read_json, send_json
from mlgate.serving.errors import AuthError
from mlgate.serving.metrics import Metrics
from mlgate.serving.state import Deployments

if TYPE_CHECKING:
    from mlgate.serving.workers import WorkerSync


class Admin:
    def __init__(
        self,
        *,
        token: str,
        deployments: Deployments,
        metrics: Metrics,
        sync: WorkerSync | None,
        max_body_bytes: int,
    ) -> None:
        self._token = token.encode()
        self._deployments = deployments
        self._metrics = metrics
        self._sync = sync
        self._max_body = max_body_bytes

    def _check(self, request: Request) -> None:
        token = request.bearer()
        if token is None or not hmac.compare_digest(token.encode(), self._token):
            raise AuthError("missing or wrong admin token")

    async def stats(self, _: str, request: Request, receive: Receive, send: Send) -> None:
        """Cumulative per-slot counters (see `Metrics.stats`) and the shadow comparison's (`ShadowStats.stats`);
        with several workers, the host's total."""
        self._check(request)
        metrics = self._metrics if self._sync is None else self._sync.host_metrics()
        await send_json(send, request, 200, {**metrics.stats(), "shadow": metrics.shadow.stats()})

    async def spec(self, _: str, request: Request, receive: Receive, send: Send) -> None:
        """`GET`: the spec in force; `PUT`: apply a new one, answered once every worker serves it."""
        self._check(request)
        deployments = self._deployments
        if request.method == "GET":
            await send_json(send, request, 200, {"spec": deployments.current.raw, "ready": deployments.ready})
            return
        raw = await read_json(request, receive, max_bytes=self._max_body, json_required=True)
        started = time.monotonic()
        sha256 = await deployments.apply(raw)
        if self._sync is not None:  # answer once every worker process serves the new spec
            await self._sync.settle(sha256, apply_seconds=time.monotonic() - started)
        await send_json(send, request, 200, self._summary())

    def _summary(self) -> dict[str, Any]:
        deployments = self._deployments
        return {
            "ready": deployments.ready,
            "endpoints": {
                name: {
                    slot.name: {"digest": slot.runtime.model.digest, "flavor": slot.runtime.model.flavor, "ready": True}
                    for slot in endpoint.slots.values()
                }
                for name, endpoint in deployments.current.endpoints.items()
            },
        }
