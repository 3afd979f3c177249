"""Forwarding to an environment's tracking server: the raw path and query as sent, a short list of
request headers, the reply streamed back.

The tracking server is reached by a pseudo URL over its Unix socket (`door.upstream`), which only the
control plane can connect to. The client's `Authorization` and cookies never reach it;
`X-Forwarded-For` is the door's own record of the client address, not the client's claim.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import Request

from mlgate.errors import BackendError
from mlgate.interfaces.api.door.upstream import Reply, UpstreamError, UpstreamPool

# What MLflow's handlers and its UI's static files use; anything else stays at the door. Not
# Accept-Encoding: the door reads some replies (a created run), and on a local socket compression buys nothing.
FORWARDED = (
    "accept",
    "content-type",
    "user-agent",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# A reply keeps its own headers except hop-by-hop ones, and sets no cookie on mlgate's origin.
DROPPED = HOP_BY_HOP | {"set-cookie"}
WHOLE_LIMIT = 256 * 1024  # a reply up to this size is read, then sent whole
# A file from the store is shown, never run, on mlgate's origin: an HTML or SVG artifact's scripts do not
# run even when the file is opened directly.
FILE_HEADERS = {"content-security-policy": "sandbox", "x-content-type-options": "nosniff"}


def request_headers(request: Request, *, length: int | None = None) -> dict[str, str]:
    headers = {k: v for k in FORWARDED if (v := request.headers.get(k)) is not None}
    if length is not None:
        headers["content-length"] = str(length)
    headers["x-forwarded-for"] = request.client.host if request.client else ""
    return headers


def target(raw_path: str, query: str) -> str:
    return raw_path + (f"?{query}" if query else "")


async def send(
    pool: UpstreamPool,
    env: str,
    upstream: str,
    method: str,
    url: str,
    headers: dict[str, str],
    content: bytes | AsyncIterator[bytes],
) -> Reply:
    try:
        return await pool.request(upstream, method, url, list(headers.items()), content)
    except UpstreamError as exc:
        raise BackendError(
            f"the MLflow tracking server of '{env}' is not answering (it may be restarting): {exc}",
            details={"environment": env},
        ) from exc


def _kept(reply: Reply, *, whole: bool) -> dict[str, str]:
    # the body goes on as it came (still encoded, if it was); a whole one gets its length anew
    dropped = DROPPED | {"content-length"} if whole else DROPPED
    return {k: v for k, v in reply.headers if k not in dropped}


async def answer(reply: Reply, extra: Mapping[str, str] | None = None) -> Response:
    """The reply for the client: a small one (most MLflow calls) read and sent in one piece, a large one
    or one of unknown length streamed through."""
    length = dict(reply.headers).get("content-length", "")
    if not (length.isdigit() and int(length) <= WHOLE_LIMIT):
        return streamed(reply, extra)
    _, response = await whole(reply)
    response.headers.update(extra or {})
    return response


def streamed(reply: Reply, extra: Mapping[str, str] | None = None) -> StreamingResponse:
    response = StreamingResponse(
        reply.body(),
        status_code=reply.status,
        headers=_kept(reply, whole=False),
        background=BackgroundTask(reply.release),
    )
    response.headers.update(extra or {})
    return response


async def whole(reply: Reply) -> tuple[bytes, Response]:
    """The reply read in full (as sent: the door decodes no content-encoding), before the door answers."""
    content = await reply.read()
    return content, Response(content, status_code=reply.status, headers=_kept(reply, whole=True))
