"""The exception tree of mlgate.

Adapters translate foreign errors (SQLAlchemy, MLflow, httpx, pydantic) into these at the boundary;
the API maps them to HTTP in one place (`interfaces.api.errors`) and the CLI prints their message.

    MlgateError                      500 internal
    ├── ConfigError                  400 invalid_config
    │   └── SandboxUnavailable       503 sandbox_unavailable (mlgate.sandbox: no sandbox can be made here)
    ├── ValidationError              422 invalid_input
    ├── NotFoundError                404 not_found
    ├── ConflictError                409 conflict
    ├── AuthenticationError          401 unauthenticated
    ├── PermissionDeniedError        403 forbidden
    └── BackendError                 502 backend_unavailable
"""

from __future__ import annotations

from typing import Any, ClassVar


class MlgateError(Exception):
    """Base of every error mlgate raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ConfigError(MlgateError):
    """The configuration file or settings are invalid."""

    code = "invalid_config"
    status = 400


class ValidationError(MlgateError):
    """A request or argument is malformed."""

    code = "invalid_input"
    status = 422


class NotFoundError(MlgateError):
    """A named thing does not exist."""

    code = "not_found"
    status = 404


class ConflictError(MlgateError):
    """The request conflicts with the current state (duplicate name, wrong state)."""

    code = "conflict"
    status = 409


class AuthenticationError(MlgateError):
    """No credential, or one that is unknown, expired or revoked."""

    code = "unauthenticated"
    status = 401


class PermissionDeniedError(MlgateError):
    """The principal is known but lacks the permission for this action."""

    code = "forbidden"
    status = 403


class BackendError(MlgateError):
    """A backend mlgate depends on (an MLflow server, a database) failed or is unreachable."""

    code = "backend_unavailable"
    status = 502
