"""One HTTP exchange as the host's handlers see it: the request (its id, headers, key), its JSON body, the answer.

Raw ASGI on purpose: the scoring path is a dict lookup, a key check, JSON -> array, one batched
``predict`` and orjson out, with nothing in between.

Every request gets an id the host issues (`x-request-id` in the answer): ground truth joins by it, so a
caller cannot choose it. A well-formed `x-request-id` the caller sent is kept beside it as the client's
own id (`x-client-request-id` in the answer, recorded with the request). An answer sent before the body
it declares was read (a refusal) closes the connection, so the unread body is never read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from mlgate.domain.request_records import new_request_id
from mlgate.serving.errors import InputError, ServingError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SLOT_HEADER = b"mlgate-deployment"
CLIENT_ID_HEADER = b"x-client-request-id"


class Request:
    __slots__ = ("body_read", "client_request_id", "headers", "method", "path", "request_id")

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[bytes, bytes] = {k.lower(): v for k, v in scope["headers"]}
        self.request_id = new_request_id()  # names its hour of the monitoring store
        given = self.headers.get(b"x-request-id")
        client_id = given.decode("latin-1") if given is not None else None
        self.client_request_id = client_id if client_id is not None and REQUEST_ID.match(client_id) else None
        self.body_read = False

    @property
    def body_unread(self) -> bool:
        """Whether the request declares a body that was not read (to its end)."""
        if self.body_read:
            return False
        return b"transfer-encoding" in self.headers or self.headers.get(b"content-length", b"0") != b"0"

    def bearer(self) -> str | None:
        value = self.headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


def presents(request: Request, hashes: tuple[bytes, ...]) -> bool:
    """Whether the request's bearer token is one of those whose SHA-256 are `hashes` (compared with every
    one, in constant time: how long it takes does not tell which matched, or how much of one)."""
    token = request.bearer()
    if token is None:
        return False
    presented = hashlib.sha256(token.encode()).digest()
    matched = False
    for expected in hashes:
        matched |= hmac.compare_digest(presented, expected)
    return matched


# A route's handler: (the route's argument, e.g. the endpoint's name; the request; receive; send).
Handler = Callable[[str, Request, Receive, Send], Awaitable[None]]


async def send_bytes(
    send: Send,
    request: Request,
    status: int,
    body: bytes,
    content_type: bytes,
    slot: str | None = None,
    *,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request.request_id.encode()),
        *extra,
    ]
    if request.client_request_id is not None:
        headers.append((CLIENT_ID_HEADER, request.client_request_id.encode()))
    if slot is not None:
        headers.append((SLOT_HEADER, slot.encode()))
    if request.body_unread:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, request: Request, status: int, payload: Any, slot: str | None = None) -> None:
    await send_bytes(send, request, status, orjson.dumps(payload), b"application/json", slot)


async def send_error(send: Send, request: Request, error: ServingError, *, v2: bool) -> None:
    """The protocol's own error shape: MLflow's `error_code` + `message`, or the Open Inference Protocol's."""
    body = {"error": error.message} if v2 else {"error_code": error.code, "message": error.message}
    extra = ((b"retry-after", str(error.retry_after_s).encode()),) if error.retry_after_s is not None else ()
    await send_bytes(send, request, error.status, orjson.dumps(body), b"application/json", extra=extra)


async def read_json(request: Request, receive: Receive, *, max_bytes: int, json_required: bool) -> Any:
    """The request's body, parsed; refused when not JSON, or larger than `max_bytes` (before reading it
    all, when its length is declared)."""
    content_type = request.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
    if content_type != "application/json" and (json_required or content_type):
        shown = content_type or "none"
        raise InputError(f"content type must be application/json, got {shown}", status=415, code="BAD_REQUEST")
    length = request.headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InputError("the client disconnected", status=400, code="BAD_REQUEST")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
        more = message.get("more_body", False)
    request.body_read = True
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the body is not valid JSON: {exc}", status=400, code="MALFORMED_REQUEST") from exc


def _too_large(max_bytes: int) -> InputError:
    return InputError(f"the body is larger than {max_bytes} bytes", status=413, code="BAD_REQUEST")
