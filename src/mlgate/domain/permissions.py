"""Who may do what: the roles, the actions routes declare, and the permission table as data.

Roles are bound per environment. What a role may do in an environment depends on the environment's
place in the promotion order (development, staging, production), so renamed or extra environments
follow the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mlgate.domain.environments import EnvironmentKind

ALL_ENVIRONMENTS = "*"
# The built-in principal automation acts as: it cannot sign in or decide a gate, and it is recorded as
# the actor of every automatic step. Its user row (kind "system" too) comes from the first migration.
SYSTEM = "system"


class Role(StrEnum):
    VIEWER = "viewer"
    DATA_SCIENTIST = "data-scientist"
    LEAD_DATA_SCIENTIST = "lead-data-scientist"
    SOFTWARE_DEVELOPER = "software-developer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Action(StrEnum):
    """What a route does, as far as permissions go. Every API route declares exactly one."""

    PUBLIC = "public"  # no credential needed: health, the OpenAPI document
    AUTHENTICATED = "authenticated"  # any principal, acting on itself: whoami, its own tokens
    READ = "read"  # models, runs, requests, endpoints, monitors, jobs
    TRAIN = "train"  # train, log runs, register models, delete dev versions
    REGISTER_DATA = "register-data"  # data assets: training data in dev, held-out evaluation data in staging
    REQUEST_PROMOTION = "request-promotion"  # open a promotion request out of the environment
    DECIDE_GATE = "decide-gate"  # approve or reject a gate into the environment
    RUN_CHECKS = "run-checks"
    DEPLOY = "deploy"  # create endpoints, deploy, shift traffic, roll back, rotate keys
    MANAGE_MONITORS = "manage-monitors"  # monitors, ground truth in bulk
    ADMINISTER = "administer"  # users, tokens, audit verify


_D, _S, _P = EnvironmentKind.DEVELOPMENT, EnvironmentKind.STAGING, EnvironmentKind.PRODUCTION
_EVERY_ROLE = frozenset(Role)

# The table from ARCHITECTURE.md, "Who may do what". Actions missing for a kind are allowed to nobody.
PERMISSIONS: dict[Action, dict[EnvironmentKind, frozenset[Role]]] = {
    Action.READ: {_D: _EVERY_ROLE, _S: _EVERY_ROLE, _P: _EVERY_ROLE},
    Action.TRAIN: {_D: frozenset({Role.DATA_SCIENTIST, Role.LEAD_DATA_SCIENTIST})},
    # Staging's held-out data (what model validation scores candidates on) is the lead's, not the author's.
    Action.REGISTER_DATA: {
        _D: frozenset({Role.DATA_SCIENTIST, Role.LEAD_DATA_SCIENTIST}),
        _S: frozenset({Role.LEAD_DATA_SCIENTIST}),
    },
    Action.REQUEST_PROMOTION: {
        _D: frozenset({Role.DATA_SCIENTIST, Role.LEAD_DATA_SCIENTIST}),
        _S: frozenset({Role.LEAD_DATA_SCIENTIST, Role.SOFTWARE_DEVELOPER}),
    },
    # The default gate roles; a gate's policy names its own approver role.
    Action.DECIDE_GATE: {
        _S: frozenset({Role.LEAD_DATA_SCIENTIST}),
        _P: frozenset({Role.SOFTWARE_DEVELOPER}),
    },
    Action.RUN_CHECKS: {
        _S: frozenset({Role.LEAD_DATA_SCIENTIST, Role.SOFTWARE_DEVELOPER, Role.OPERATOR}),
    },
    Action.DEPLOY: {
        _D: frozenset({Role.OPERATOR}),
        _S: frozenset({Role.OPERATOR, Role.SOFTWARE_DEVELOPER}),
        _P: frozenset({Role.OPERATOR}),
    },
    Action.MANAGE_MONITORS: {
        _D: frozenset({Role.OPERATOR}),
        _S: frozenset({Role.OPERATOR}),
        _P: frozenset({Role.OPERATOR}),
    },
}

# Actions that are not about one environment.
GLOBAL_PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.ADMINISTER: frozenset({Role.ADMIN}),
}


def allowed_roles(action: Action, kind: EnvironmentKind | None) -> frozenset[Role]:
    """The roles that may take `action` in an environment of `kind` (None for global actions)."""
    if action in GLOBAL_PERMISSIONS:
        return GLOBAL_PERMISSIONS[action]
    if kind is None:
        return frozenset()
    return PERMISSIONS.get(action, {}).get(kind, frozenset())


@dataclass(frozen=True)
class Principal:
    """Who is acting: a person, or the built-in `system` principal that automation acts as."""

    id: int
    name: str
    is_system: bool = False
    # environment name (or ALL_ENVIRONMENTS) -> roles bound there
    bindings: dict[str, frozenset[Role]] = field(default_factory=dict)
    token_id: int | None = None
    # A job token's reach ("mlflow:<env>": that environment's MLflow door only), and its job.
    scope: str | None = None
    job_id: int | None = None
    # Who created the token it acts with (a gate decision needs its holder), and since when each role
    # binding is held: (environment or ALL_ENVIRONMENTS, role) -> when it was granted (UTC).
    token_issued_by: str | None = None
    granted_at: Mapping[tuple[str, Role], datetime] = field(default_factory=dict)

    def roles_in(self, environment: str | None) -> frozenset[Role]:
        """Roles bound in `environment` plus those bound everywhere; None means everywhere only."""
        everywhere = self.bindings.get(ALL_ENVIRONMENTS, frozenset())
        if environment is None:
            return everywhere
        return everywhere | self.bindings.get(environment, frozenset())

    def held_since(self, role: Role, environment: str) -> datetime | None:
        """Since when `role` is held in `environment` (bound there or everywhere); None if it is not, or
        the grant's time is unknown."""
        times = [self.granted_at.get((env, role)) for env in (environment, ALL_ENVIRONMENTS)]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def may(self, action: Action, environment: str | None, kind: EnvironmentKind | None) -> bool:
        if action is Action.PUBLIC:
            return True
        if action is Action.AUTHENTICATED:
            return not self.is_system
        if action is Action.DECIDE_GATE and self.is_system:
            return False
        return bool(self.roles_in(environment) & allowed_roles(action, kind))


def denial_message(action: Action, environment: str | None, kind: EnvironmentKind | None) -> str:
    """Names the missing permission: the action, the environment and the roles that would allow it."""
    roles = sorted(allowed_roles(action, kind))
    where = f" in '{environment}'" if environment else ""
    if action is Action.READ:
        return f"'read'{where} needs a role bound to '{environment}'"
    if not roles:
        return f"'{action}' is not allowed{where} for any role"
    return f"'{action}'{where} needs one of the roles: {', '.join(roles)}"
