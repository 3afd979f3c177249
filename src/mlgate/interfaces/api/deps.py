"""Request dependencies: the app context, the caller's credential, and each route's permission.

Every route declares exactly one `Permission` (an action and where its environment comes from);
the route-walking test fails on a route that declares none.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from mlgate.domain import gates
from mlgate.domain.environments import EnvironmentKind
from mlgate.domain.permissions import Action, Principal, denial_message
from mlgate.errors import AuthenticationError, PermissionDeniedError
from mlgate.interfaces.api.context import AppContext
from mlgate.services.identity import accounts

ANONYMOUS = Principal(id=0, name="anonymous")


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


def bearer_token(request: Request) -> str | None:
    """The token from `Authorization: Bearer`, or the password of HTTP Basic (for tools that only do that)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("malformed Basic credentials") from None
        return decoded.partition(":")[2] or None
    raise AuthenticationError(f"unsupported authorization scheme '{scheme}'; send 'Bearer <token>'")


def _refuse_admins(principal: Principal, action: Action) -> None:
    try:
        gates.check_person(principal)
    except gates.GateRefusal as exc:
        message = f"{exc.message} ('{action.value}' refused)"
        raise PermissionDeniedError(message, details={**exc.details, "action": action.value}) from None


class Permission:
    """A route's declared action; resolving it authenticates the caller and checks the table."""

    def __init__(self, action: Action, *, env_param: str | None = "env") -> None:
        self.action = action
        self.env_param = env_param if action not in (Action.PUBLIC, Action.AUTHENTICATED) else None

    def action_for(self, request: Request) -> Action:
        return self.action

    def reaches(self, scope: str, environment: str | None) -> bool:
        """Whether a scoped (job) token may use this route; only the MLflow door admits one."""
        return False

    def environment(self, request: Request, ctx: AppContext) -> tuple[str | None, EnvironmentKind | None]:
        if self.env_param is None:
            return None, None
        name = request.path_params.get(self.env_param) or request.query_params.get(self.env_param)
        if name is None:
            return None, None
        return name, ctx.settings.environment(name).kind

    def __call__(self, request: Request, ctx: ContextDep) -> Principal:
        action = self.action_for(request)
        if action is Action.PUBLIC:
            return ANONYMOUS
        token = bearer_token(request)
        if token is None:
            raise AuthenticationError("missing credential: send 'Authorization: Bearer <mlgate token>'")
        principal = accounts.authenticate(ctx.db, token)
        env, kind = self.environment(request, ctx)
        if principal.scope is not None and not self.reaches(principal.scope, env):
            raise PermissionDeniedError(
                f"a job token reaches only its environment's MLflow door ({principal.scope})",
                details={"scope": principal.scope},
            )
        if action is Action.DECIDE_GATE and env is not None:
            # The gate's policy names its approver role; the table holds only the defaults.
            gate = next((g for g in ctx.settings.gates if g.target == env), None)
            _refuse_admins(principal, action)
            if gate is None or principal.is_system or gate.approver_role not in principal.roles_in(env):
                needs = f"needs the role: {gate.approver_role}" if gate else "has no gate leading into it"
                raise PermissionDeniedError(
                    f"{principal.name} may not do this: '{action}' in '{env}' {needs}",
                    details={"action": action.value, "environment": env, "user": principal.name},
                )
            return principal
        if not principal.may(action, env, kind):
            raise PermissionDeniedError(
                f"{principal.name} may not do this: {denial_message(action, env, kind)}",
                details={"action": action.value, "environment": env, "user": principal.name},
            )
        return principal


# Typed route arguments: a route reads `principal: Reader` and has declared its action by doing so.
Public = Annotated[Principal, Depends(Permission(Action.PUBLIC))]
Authenticated = Annotated[Principal, Depends(Permission(Action.AUTHENTICATED))]
Reader = Annotated[Principal, Depends(Permission(Action.READ))]
Administrator = Annotated[Principal, Depends(Permission(Action.ADMINISTER, env_param=None))]
