"""Errors of the serving host: each carries the HTTP status it answers with.

ServingError          500
├── InputError        400 / 413 / 415 / 422: the caller's request (or a pushed spec) is wrong, never a 500
├── AuthError         401
├── NotFound          404
├── SpecRejected      409: a digest mismatch, a model that fails to load or warm up
└── Busy              503: as many requests in flight as the host takes; answered with `Retry-After`
"""

from __future__ import annotations


class ServingError(Exception):
    status = 500
    code = "INTERNAL_ERROR"
    retry_after_s: int | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class InputError(ServingError):
    status = 422
    code = "INVALID_PARAMETER_VALUE"


class AuthError(ServingError):
    status = 401
    code = "UNAUTHENTICATED"


class NotFound(ServingError):
    status = 404
    code = "RESOURCE_DOES_NOT_EXIST"


class SpecRejected(ServingError):
    status = 409
    code = "INVALID_STATE"


class Busy(ServingError):
    status = 503
    code = "TEMPORARILY_UNAVAILABLE"
    retry_after_s = 1
