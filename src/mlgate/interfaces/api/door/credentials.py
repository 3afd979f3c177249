"""Who is calling through the door, and whether they may: a token (bearer, or Basic's password), or the
web UI's session for the MLflow UI, whose writes carry the session's CSRF proof.

The MLflow UI sends every cookie named `mlflow-request-header-<Name>` as a `<Name>` request header
(its way of working behind an authenticating proxy). The door hands the signed-in page the session's
CSRF token in such a cookie, so the UI's own ajax writes carry it as `X-Mlgate-Csrf`, while a page of
another site can make the browser send the session cookie but cannot read or set that header.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.mlflow_operations import Kind, Operation
from mlgate.domain.permissions import Principal, denial_message
from mlgate.errors import AuthenticationError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.deps import bearer_token
from mlgate.interfaces.api.door.answers import denied
from mlgate.interfaces.web import session as sessions
from mlgate.interfaces.web.core import signer_of
from mlgate.services.identity import accounts

CSRF_HEADER = "x-mlgate-csrf"
CSRF_COOKIE = "mlflow-request-header-X-Mlgate-Csrf"
MISSING = (
    "missing credential: send 'Authorization: Bearer <mlgate token>' (MLflow clients: set "
    "MLFLOW_TRACKING_TOKEN), or sign in to mlgate's web UI to use the MLflow UI"
)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    session: sessions.Session | None = None  # the web session, when the MLflow UI is calling


def cached(request: Request, ctx: AppContext) -> Caller | None:
    """The caller, if their token was used a moment ago: no database read, so no trip off the event loop."""
    token = bearer_token(request)
    principal = accounts.authenticate_cached(ctx.db, token) if token is not None else None
    return Caller(principal) if principal is not None else None


def identify(request: Request, ctx: AppContext) -> Caller:
    """The caller, from their token, else from the web session's cookie (blocking: run off the loop)."""
    token = bearer_token(request)
    if token is not None:
        return Caller(accounts.authenticate(ctx.db, token))
    session = signer_of(request).load(request.cookies.get(sessions.COOKIE))
    if session is not None:
        principal = sessions.principal_of_session(ctx.db, session)
        if principal is not None:
            return Caller(principal, session)
    raise AuthenticationError(MISSING)


def authorize(request: Request, ctx: AppContext, caller: Caller, env: str, operation: Operation) -> None:
    """Refuses what `caller` may not do in `env`: a denied surface, a write outside development, a
    missing role, a job token used for another environment, a UI write without the CSRF proof."""
    principal = caller.principal
    if operation.kind is Kind.DENIED:
        raise denied(f"'{operation.method} {operation.pattern}' is denied by mlgate: {operation.denial}")
    if principal.scope is not None and principal.scope != f"mlflow:{env}":
        raise denied(f"a job token reaches only its environment's MLflow door ({principal.scope})")
    kind = ctx.settings.environment(env).kind
    if operation.kind is Kind.WRITE and kind is not EnvironmentKind.DEVELOPMENT:
        raise denied(
            f"{principal.name} may not do this: '{operation.action}' in '{env}' is not allowed for any role: "
            f"'{env}' is written only by promotion, not through its MLflow store"
        )
    if not principal.may(operation.action, env, kind):
        raise denied(f"{principal.name} may not do this: {denial_message(operation.action, env, kind)}")
    from_ui = operation.kind is Kind.WRITE and caller.session is not None
    if from_ui and not sessions.csrf_matches(caller.session, request.headers.get(CSRF_HEADER)):
        raise denied(
            "a write from the MLflow UI needs the session's CSRF proof (the X-Mlgate-Csrf header): reload the page"
        )
