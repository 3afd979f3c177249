"""Reading an uploaded request body with a size limit, refusing early when the client announces more:
into memory (`read_body`), or spooled to an unnamed temporary file (`spooled_body`) for uploads too large
to hold."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

from anyio import to_thread
from fastapi import Request

from mlgate.errors import MlgateError, ValidationError

# What a spooled body gathers in memory before one write to its file, made off the event loop.
SPOOL_WRITE_BYTES = 1024 * 1024


class PayloadTooLargeError(MlgateError):
    code = "payload_too_large"
    status = 413


def _too_large(limit: int, what: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"{what} is over the {limit // (1024 * 1024)} MiB limit", details={"limit_bytes": limit}
    )


def _refuse_announced(request: Request, limit: int, what: str) -> None:
    """Refused from the Content-Length, before a byte of the body is read."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise _too_large(limit, what)


def _refuse_empty(size: int, what: str) -> None:
    if not size:
        raise ValidationError(f"{what} is empty: send the bytes as the request body")


async def read_body(request: Request, *, limit: int, what: str) -> bytes:
    _refuse_announced(request, limit, what)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, what)
        chunks.append(chunk)
    _refuse_empty(size, what)
    return b"".join(chunks)


@asynccontextmanager
async def spooled_body(request: Request, *, limit: int, what: str) -> AsyncIterator[IO[bytes]]:
    """The body in a temporary file (deleted when closed), open at its start: bounded as `read_body`
    bounds it, and never in memory by more than SPOOL_WRITE_BYTES."""
    _refuse_announced(request, limit, what)
    with tempfile.TemporaryFile() as spool:
        pending: list[bytes] = []
        held = size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, what)
            pending.append(chunk)
            held += len(chunk)
            if held >= SPOOL_WRITE_BYTES:
                await to_thread.run_sync(spool.write, b"".join(pending))
                pending, held = [], 0
        await to_thread.run_sync(spool.write, b"".join(pending))
        _refuse_empty(size, what)
        spool.seek(0)
        yield spool
