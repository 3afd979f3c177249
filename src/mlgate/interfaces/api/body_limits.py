"""Every body on `/api/v1` bounded before it is read: an ASGI middleware in front of the routes.

FastAPI reads a JSON body whole before it resolves a route's dependencies, so an unauthenticated caller
could otherwise make the server hold any size of body. Here a `Content-Length` over the route's cap is
answered 413 before a byte of the body is read, and a body without one (chunked) is counted as it
arrives and refused at the cap. The routes that take uploads have their own, larger caps (`UPLOADS`) and
read their bodies as streams after their caller is authorized; the MLflow door and the web UI bound
their own bodies and are not covered here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlgate.interfaces.api.errors import error_body

API_PREFIX = "/api/v1/"
JSON_LIMIT = 1024 * 1024  # the largest JSON document a route takes (a policy-sized check list) many times over


@dataclass(frozen=True)
class RouteLimit:
    method: str
    path: re.Pattern[str]
    limit: int
    what: str


def upload_limit(method: str, pattern: str, limit: int, what: str) -> RouteLimit:
    """A route taking a larger body than `JSON_LIMIT`: `pattern` matches its path (segments `[^/]+`)."""
    return RouteLimit(method, re.compile(pattern), limit, what)


class BodyTooLarge(HTTPException):
    """A body that passed its cap while it was read: an HTTPException, so that FastAPI, which turns other
    errors met while it reads a body into a 400, lets it through to the API's error handler (413)."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(413, too_large_message(limit, what))
        self.limit, self.what = limit, what


class BodyLimits:
    """The middleware: 413 in the API's error shape for a body over its route's cap."""

    def __init__(self, app: ASGIApp, *, uploads: Sequence[RouteLimit]) -> None:
        self.app = app
        self.uploads = tuple(uploads)

    def _cap(self, method: str, path: str) -> tuple[int, str]:
        for route in self.uploads:
            if route.method == method and route.path.fullmatch(path):
                return route.limit, route.what
        return JSON_LIMIT, "the request body"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        limit, what = self._cap(scope["method"], path)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit, what)
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, what)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _refuse(send, limit, what)


def too_large_message(limit: int, what: str) -> str:
    size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
    return f"{what} is over the {size} limit"


async def _refuse(send: Send, limit: int, what: str) -> None:
    body = json.dumps(error_body("payload_too_large", too_large_message(limit, what), {"limit_bytes": limit})).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
