"""The one place that maps errors to HTTP: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlgate.errors import MlgateError
from mlgate.interfaces.api.schemas.errors import ErrorPublic

log = logging.getLogger(__name__)

# What every API route may answer besides its own success, as the OpenAPI document says it: each refusal
# in the one error shape (in place of FastAPI's default 422 body, which this API never sends).
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorPublic, "description": "Refused: the request is wrong, unauthorized or conflicts"},
    "5XX": {"model": ErrorPublic, "description": "Failed: a backend mlgate depends on, or mlgate itself"},
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def _problem(error: Any) -> dict[str, str]:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":  # loc is ("body", <character position>), not a field
        reason = (error.get("ctx") or {}).get("error", "")
        position = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"field": "body", "problem": f"invalid JSON{position}: {reason}".rstrip(": ")}
    return {"field": _location(loc), "problem": str(error.get("msg", "invalid"))}


async def _mlgate_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlgateError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems) or "invalid request"
    return JSONResponse(error_body("invalid_input", message, {"problems": problems}), 422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path.startswith("/mlflow/"):  # the MLflow door answers as MLflow, whatever refuses
        body = {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{request.method} {request.url.path}: {exc.detail}"}
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("internal", "internal error; see the server log"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(MlgateError, _mlgate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
