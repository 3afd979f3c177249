"""Reading an uploaded request body with a size limit, refusing early when the client announces more."""

from __future__ import annotations

from fastapi import Request

from mlgate.errors import MlgateError, ValidationError


class PayloadTooLargeError(MlgateError):
    code = "payload_too_large"
    status = 413


async def read_body(request: Request, *, limit: int, what: str) -> bytes:
    megabytes = limit // (1024 * 1024)
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise PayloadTooLargeError(f"{what} is over the {megabytes} MiB limit", details={"limit_bytes": limit})
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"{what} is over the {megabytes} MiB limit", details={"limit_bytes": limit})
        chunks.append(chunk)
    if not size:
        raise ValidationError(f"{what} is empty: send the bytes as the request body")
    return b"".join(chunks)
