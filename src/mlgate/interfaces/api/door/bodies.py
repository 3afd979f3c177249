"""Request bodies at the door: bounded before they are read, streamed where they are files.

A body the door inspects (JSON: a run's tags, a version to register) is read up to its route's cap and
parsed once; the door then forwards its own serialization of what it parsed, so MLflow cannot read a
different request than the one the door checked (duplicate keys, a field spelled both `run_id` and
`runId`, which MLflow's protobuf parser accepts). An artifact is streamed through with its declared
length, never held in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from mlgate.interfaces.api.door.answers import Refusal, invalid, too_large

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def declared_length(request: Request, limit: int, what: str) -> int | None:
    """The Content-Length, refused up front when it is over `limit`."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise invalid(f"Content-Length '{value[:40]}' is not a number of bytes")
    if int(value) > limit:
        raise too_large(limit, what)
    return int(value)


async def read_capped(request: Request, limit: int, what: str) -> bytes:
    declared_length(request, limit, what)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)


async def streamed(request: Request, limit: int, what: str) -> tuple[AsyncIterator[bytes], int]:
    """The body as a stream of its declared length (an upload must say how long it is)."""
    length = declared_length(request, limit, what)
    if length is None:
        raise Refusal(411, "INVALID_PARAMETER_VALUE", f"{what} must send Content-Length (chunked uploads are refused)")

    async def chunks() -> AsyncIterator[bytes]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # the server enforces the declared length too; this is the door's own bound
                raise too_large(limit, what)
            yield chunk

    return chunks(), length


def _snake(key: str) -> str:
    return _CAMEL.sub(lambda m: "_" + m[1].lower(), key)


def _canonical(fields: dict[str, Any], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = _snake(key) if isinstance(key, str) else key
        if name in out:
            raise invalid(f"the body of {what} names the field '{name}' twice (as '{name}' and in camelCase)")
        out[name] = value
    return out


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """The body's JSON object, its field names (and its tags' field names) in MLflow's snake_case."""
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid(f"the body of {what} is not valid JSON") from None
    if not isinstance(payload, dict):
        raise invalid(f"the body of {what} must be a JSON object")
    fields = _canonical(payload, what)
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = [_canonical(v, what) if isinstance(v, dict) else v for v in value]
    return fields


def serialized(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
