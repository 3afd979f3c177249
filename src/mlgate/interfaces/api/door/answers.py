"""The door answers as MLflow does, `{"error_code", "message"}`, so MLflow clients raise their own exceptions.

MLflow's client turns a JSON error body into `MlflowException` with that `error_code`
(`RestException`); mlgate's own shape would surface as `INTERNAL_ERROR: Response: {...}`.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from mlgate.errors import (
    AuthenticationError,
    BackendError,
    ConflictError,
    MlgateError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)

UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"

# mlgate's error -> MLflow's code and status
_CODES: tuple[tuple[type[MlgateError], str, int], ...] = (
    (AuthenticationError, UNAUTHENTICATED, 401),
    (PermissionDeniedError, PERMISSION_DENIED, 403),
    (NotFoundError, RESOURCE_DOES_NOT_EXIST, 404),
    (ValidationError, INVALID_PARAMETER_VALUE, 400),
    (ConflictError, RESOURCE_CONFLICT, 409),
    (BackendError, TEMPORARILY_UNAVAILABLE, 503),
)


class Refusal(Exception):
    """A refusal the door answers itself, in MLflow's shape."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def denied(message: str) -> Refusal:
    return Refusal(403, PERMISSION_DENIED, message)


def invalid(message: str) -> Refusal:
    return Refusal(400, INVALID_PARAMETER_VALUE, message)


def too_large(limit: int, what: str) -> Refusal:
    return Refusal(
        413, INVALID_PARAMETER_VALUE, f"the request body is over the {limit // (1024 * 1024)} MiB {what} may send"
    )


def from_error(exc: MlgateError) -> Refusal:
    for kind, code, status in _CODES:
        if isinstance(exc, kind):
            return Refusal(status, code, exc.message)
    return Refusal(500, INTERNAL_ERROR, exc.message)


def response(refusal: Refusal) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
    return JSONResponse({"error_code": refusal.error_code, "message": refusal.message}, refusal.status, headers=headers)
