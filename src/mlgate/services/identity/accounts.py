"""Users, role bindings and API tokens; turning a bearer token into a Principal."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ApiToken, EndedSession, RoleBinding, User, utcnow
from mlgate.adapters.sql.queries import as_utc
from mlgate.config import Settings
from mlgate.domain.gates import Gate, approver_bindings
from mlgate.domain.permissions import ALL_ENVIRONMENTS, SYSTEM, Principal, Role
from mlgate.domain.tokens import TOKEN_PREFIX, display_prefix, new_token, token_hash
from mlgate.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from mlgate.services import audit
from mlgate.services.identity.token_cache import TOKENS
from mlgate.services.notifications import outbox

USER_NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
MAX_TOKEN_DAYS = 3650


@dataclass(frozen=True)
class Binding:
    role: Role
    environment: str  # an environment name, or ALL_ENVIRONMENTS


@dataclass(frozen=True)
class UserView:
    name: str
    email: str | None
    kind: str
    created_at: datetime
    bindings: list[Binding]


@dataclass(frozen=True)
class TokenView:
    id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only moment its value exists outside the caller's hands."""

    record: TokenView
    value: str


@contextmanager
def _identity_write(db: Database) -> Iterator[Session]:
    """A write of users, tokens, roles or sessions: cached principals are dropped once it commits."""
    try:
        with db.write() as session:
            yield session
    finally:
        TOKENS.clear()


def _user_view(user: User) -> UserView:
    return UserView(
        name=user.name,
        email=user.email,
        kind=user.kind,
        created_at=user.created_at,
        bindings=[Binding(Role(b.role), b.environment) for b in user.bindings],
    )


def _token_view(token: ApiToken, user_name: str | None = None) -> TokenView:
    return TokenView(
        id=token.id,
        user=user_name or token.user.name,
        name=token.name,
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


def parse_bindings(roles: Sequence[str], environments: Sequence[str], known: Sequence[str]) -> list[Binding]:
    """Every role bound in every environment given; `admin` without environments means all of them."""
    if not roles:
        raise ValidationError("at least one role is required", details={"roles": list(roles)})
    parsed = []
    for role_name in roles:
        try:
            parsed.append(Role(role_name))
        except ValueError:
            raise ValidationError(
                f"unknown role '{role_name}'; expected one of: {', '.join(r.value for r in Role)}",
                details={"role": role_name},
            ) from None
    for env in environments:
        if env != ALL_ENVIRONMENTS and env not in known:
            raise ValidationError(
                f"unknown environment '{env}'; expected one of: {', '.join(known)}",
                details={"environment": env},
            )
    bindings = []
    for role in parsed:
        if role is Role.ADMIN:
            if environments and list(environments) != [ALL_ENVIRONMENTS]:
                raise ValidationError(
                    "role 'admin' is not bound per environment: give it without --env",
                    details={"role": role.value},
                )
            bindings.append(Binding(role, ALL_ENVIRONMENTS))
            continue
        envs = [env for env in environments if env != ALL_ENVIRONMENTS] or (
            list(known) if ALL_ENVIRONMENTS in environments else []
        )
        if not envs:
            raise ValidationError(
                f"role '{role}' is bound per environment: give at least one environment",
                details={"role": role.value},
            )
        bindings.extend(Binding(role, env) for env in envs)
    return bindings


def _get_user(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFoundError(f"unknown user '{name}'", details={"user": name})
    return user


def _issue(session: Session, *, user: User, name: str, expires_in: timedelta | None, issued_by: str) -> IssuedToken:
    if user.kind == SYSTEM:
        raise ValidationError("the system principal cannot sign in: it has no tokens")
    if expires_in is not None and not timedelta(0) < expires_in <= timedelta(days=MAX_TOKEN_DAYS):
        raise ValidationError(f"token expiry must be more than 0 and at most {MAX_TOKEN_DAYS} days")
    value = new_token()
    record = ApiToken(
        user_id=user.id,
        name=name,
        prefix=display_prefix(value),
        token_hash=token_hash(value),
        created_at=utcnow(),
        expires_at=utcnow() + expires_in if expires_in else None,
        issued_by=issued_by,
    )
    session.add(record)
    session.flush()
    return IssuedToken(_token_view(record, user.name), value)


def create_user(
    db: Database,
    *,
    actor: str,
    name: str,
    bindings: Sequence[Binding],
    email: str | None = None,
    gates: Sequence[Gate] = (),
) -> tuple[UserView, IssuedToken]:
    """A new person with their role bindings and a first token (which signs them in and lets them create
    their own, but decides no gate: it was created by `actor`)."""
    _refuse_admin_approver(name, bindings, gates)
    if not USER_NAME.match(name):
        raise ValidationError(
            f"invalid user name '{name}': expected lowercase letters, digits, '.', '_' or '-'",
            details={"user": name},
        )
    if name == SYSTEM:
        raise ConflictError(f"'{SYSTEM}' is the built-in automation principal")
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise ValidationError(f"invalid email address '{email}'", details={"email": email})
    try:
        with _identity_write(db) as session:
            if session.execute(select(User.id).where(User.name == name)).first():
                raise ConflictError(f"user '{name}' already exists", details={"user": name})
            user = User(name=name, email=email, kind="human", created_at=utcnow())
            user.bindings = [RoleBinding(role=b.role.value, environment=b.environment) for b in bindings]
            session.add(user)
            session.flush()
            issued = _issue(session, user=user, name="default", expires_in=None, issued_by=actor)
            audit.record(
                session,
                actor=actor,
                action="user.create",
                subject=f"user:{name}",
                payload={"email": email, "bindings": [[b.role.value, b.environment] for b in bindings]},
            )
            view = _user_view(user)
    except IntegrityError as exc:  # a concurrent create of the same name
        raise ConflictError(f"user '{name}' already exists", details={"user": name}) from exc
    return view, issued


def _refuse_admin_approver(name: str, bindings: Iterable[Binding | RoleBinding], gates: Sequence[Gate]) -> None:
    """Administrators administer, they never decide a gate: nobody holds `admin` and a gate's approver role."""
    held = [(Role(b.role), b.environment) for b in bindings]
    if not any(role is Role.ADMIN for role, _ in held):
        return
    deciding = approver_bindings(gates, held)
    if deciding:
        role, env = deciding[0]
        raise ValidationError(
            f"'{name}' would be an administrator and hold '{role}' in '{env}', the approver role of a gate: "
            "administrators never decide a gate, so an admin holds no approver role",
            details={"user": name, "role": role.value, "environment": env, "rule": "admins-never-decide"},
        )


def grant(db: Database, settings: Settings, *, actor: str, name: str, bindings: Sequence[Binding]) -> UserView:
    """Bind more roles to a user. The person and the approvers of every gate a new role decides are told."""
    with _identity_write(db) as session:
        user = _get_user(session, name)
        if user.kind == SYSTEM:
            raise ValidationError("the system principal holds no roles")
        have = {(b.role, b.environment) for b in user.bindings}
        added = [b for b in bindings if (b.role.value, b.environment) not in have]
        _refuse_admin_approver(name, [*user.bindings, *added], settings.gates)
        now = utcnow()
        user.bindings.extend(RoleBinding(role=b.role.value, environment=b.environment, created_at=now) for b in added)
        granted = [[b.role.value, b.environment] for b in added]
        audit.record(session, actor=actor, action="user.grant", subject=f"user:{name}", payload=granted)
        session.flush()
        if added:
            listed = ", ".join(f"{b.role.value} in {b.environment}" for b in added)
            outbox.emit_identity(
                session,
                settings,
                event="identity.role-granted",
                change={"user": name, "by": actor, "granted": granted},
                recipients={name} | _fellow_approvers(session, settings, [(b.role, b.environment) for b in added]),
                text=f"{actor} gave {name} the role(s) {listed}",
            )
        return _user_view(user)


def _fellow_approvers(session: Session, settings: Settings, held: Sequence[tuple[Role, str]]) -> set[str]:
    """The approvers of the gates that the bindings `held` decide."""
    found: set[str] = set()
    for gate in settings.gates:
        if approver_bindings([gate], held):
            role, env = gate.approver_role.value, gate.target
            found |= outbox.approvers(session, role=role, environment=env, exclude=set())
    return found


def revoke_roles(db: Database, *, actor: str, name: str, bindings: Sequence[Binding]) -> UserView:
    with _identity_write(db) as session:
        user = _get_user(session, name)
        if user.kind == SYSTEM:
            raise ValidationError("the system principal holds no roles")
        drop = {(b.role.value, b.environment) for b in bindings}
        user.bindings = [b for b in user.bindings if (b.role, b.environment) not in drop]
        audit.record(session, actor=actor, action="user.revoke", subject=f"user:{name}", payload=sorted(drop))
        session.flush()
        return _user_view(user)


def list_users(db: Database) -> list[UserView]:
    with db.read() as session:
        return [_user_view(u) for u in session.execute(select(User).order_by(User.id)).scalars()]


def get_user(db: Database, name: str) -> UserView:
    with db.read() as session:
        return _user_view(_get_user(session, name))


def create_token(
    db: Database,
    settings: Settings,
    *,
    actor: str,
    user_name: str,
    name: str,
    expires_in: timedelta | None,
) -> IssuedToken:
    """A token for `user_name`. One someone else creates (a reset) decides no gate, and the person and
    the approvers of the gates they decide are told of it."""
    with _identity_write(db) as session:
        user = _get_user(session, user_name)
        issued = _issue(session, user=user, name=name, expires_in=expires_in, issued_by=actor)
        audit.record(
            session,
            actor=actor,
            action="token.create",
            subject=f"user:{user_name}",
            payload={"token_id": issued.record.id, "name": name, "prefix": issued.record.prefix, "issued_by": actor},
        )
        if actor != user_name:
            held = [(Role(b.role), b.environment) for b in user.bindings]
            outbox.emit_identity(
                session,
                settings,
                event="identity.token-issued",
                change={"user": user_name, "by": actor, "token_id": issued.record.id, "prefix": issued.record.prefix},
                recipients={user_name} | _fellow_approvers(session, settings, held),
                text=f"{actor} created a token for {user_name} ({issued.record.prefix}...): it signs in, and decides "
                "no gate",
            )
        return issued


def list_tokens(db: Database, *, user_name: str | None = None) -> list[TokenView]:
    query = select(ApiToken).order_by(ApiToken.id)
    with db.read() as session:
        if user_name is not None:
            query = query.where(ApiToken.user_id == _get_user(session, user_name).id)
        return [_token_view(t) for t in session.execute(query).scalars()]


def revoke_token(db: Database, *, actor: str, token_id: int, owner: str | None = None) -> TokenView:
    """Revoke a token; with `owner`, only one of that user's own tokens."""
    with _identity_write(db) as session:
        token = session.get(ApiToken, token_id)
        if token is None or (owner is not None and token.user.name != owner):
            raise NotFoundError(f"unknown token {token_id}", details={"token_id": token_id})
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            audit.record(
                session,
                actor=actor,
                action="token.revoke",
                subject=f"user:{token.user.name}",
                payload={"token_id": token_id},
            )
        return _token_view(token)


def principal_of(user: User, *, token: ApiToken | None = None) -> Principal:
    bindings: dict[str, set[Role]] = {}
    granted_at: dict[tuple[str, Role], datetime] = {}
    for binding in user.bindings:
        role = Role(binding.role)
        bindings.setdefault(binding.environment, set()).add(role)
        since = as_utc(binding.created_at)
        if since is not None:
            granted_at[(binding.environment, role)] = since
    return Principal(
        id=user.id,
        name=user.name,
        is_system=user.kind == SYSTEM,
        bindings={env: frozenset(roles) for env, roles in bindings.items()},
        token_id=token.id if token is not None else None,
        token_issued_by=token.issued_by if token is not None else None,
        granted_at=granted_at,
    )


def system_principal(db: Database) -> Principal:
    """The built-in principal automation acts as."""
    with db.read() as session:
        return principal_of(_get_user(session, SYSTEM))


def authenticate_cached(db: Database, token: str) -> Principal | None:
    """The principal of a token used a moment ago (`token_cache`), without reading the database."""
    return TOKENS.get(db.url, token_hash(token)) if token.startswith(TOKEN_PREFIX) else None


def authenticate(db: Database, token: str) -> Principal:
    """The principal a bearer token stands for, or AuthenticationError saying why not."""
    if not token.startswith(TOKEN_PREFIX):
        raise AuthenticationError("not an mlgate token (expected one starting with 'mlg_')")
    hashed = token_hash(token)
    cached = TOKENS.get(db.url, hashed)
    if cached is not None:
        return cached
    with db.read() as session:
        record = session.execute(select(ApiToken).where(ApiToken.token_hash == hashed)).scalar_one_or_none()
        if record is None:
            raise AuthenticationError("unknown token")
        principal = _principal_of_token(record)
        TOKENS.put(db.url, hashed, principal, as_utc(record.expires_at))
        return principal


def authenticate_session(db: Database, token_id: int, *, user: str, session_hash: str) -> Principal:
    """The person a web session stands for: it names their token by id (never the token), which is checked
    as `authenticate` checks a bearer token, in the same read as whether the session was signed out."""
    with db.read() as session:
        if session.execute(select(EndedSession.id).where(EndedSession.session_hash == session_hash)).first():
            raise AuthenticationError("this session was signed out")
        record = session.execute(select(ApiToken).where(ApiToken.id == token_id)).scalar_one_or_none()
        if record is None or record.user.name != user:
            raise AuthenticationError("unknown token")
        if record.scope is not None:
            raise AuthenticationError("a job's token cannot sign in")
        return _principal_of_token(record)


def _principal_of_token(record: ApiToken) -> Principal:
    if record.revoked_at is not None:
        raise AuthenticationError("this token was revoked")
    expires_at = as_utc(record.expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise AuthenticationError("this token has expired")
    user = record.user
    acts_with_own_role = record.role is not None and record.scope is not None and record.job_id is not None
    if user.disabled_at is not None or (user.kind == SYSTEM and not acts_with_own_role):
        raise AuthenticationError("this user cannot sign in")
    principal = principal_of(user, token=record)
    if record.scope is not None:
        principal = dataclasses.replace(principal, scope=record.scope, job_id=record.job_id)
        if record.role is not None:
            # The role the job was started with, in its environment's MLflow door, and nowhere else.
            env = record.scope.removeprefix("mlflow:")
            principal = dataclasses.replace(principal, bindings={env: frozenset({Role(record.role)})})
    return principal


def end_session(db: Database, session_hash: str, *, user: str, forget_after: timedelta) -> None:
    """Record a web session as signed out; forget those ended longer ago than a session lives."""
    with _identity_write(db) as session:
        now = utcnow()
        session.execute(delete(EndedSession).where(EndedSession.ended_at < now - forget_after))
        if session.execute(select(EndedSession.id).where(EndedSession.session_hash == session_hash)).first() is None:
            session.add(EndedSession(session_hash=session_hash, user=user, ended_at=now))


def has_human_users(db: Database) -> bool:
    with db.read() as session:
        return session.execute(select(User.id).where(User.kind == "human")).first() is not None


def mint_job_token(
    db: Database, *, job_id: int, user_name: str, environment: str, ttl: timedelta, role: Role | None = None
) -> str:
    """A short-lived token for one job: it acts as the job's requester, on `environment`'s MLflow door only,
    with the requester's bindings there, or with `role` alone when given (a job the server starts on its
    own: its requester, `system`, is bound nowhere)."""
    value = new_token()
    with _identity_write(db) as session:
        user = _get_user(session, user_name)
        session.add(
            ApiToken(
                user_id=user.id,
                name=f"job-{job_id}",
                prefix=display_prefix(value),
                token_hash=token_hash(value),
                created_at=utcnow(),
                expires_at=utcnow() + ttl,
                job_id=job_id,
                scope=f"mlflow:{environment}",
                role=role.value if role is not None else None,
            )
        )
    return value


def revoke_job_tokens(db: Database, *, job_id: int) -> None:
    with _identity_write(db) as session:
        for token in session.execute(
            select(ApiToken).where(ApiToken.job_id == job_id, ApiToken.revoked_at.is_(None))
        ).scalars():
            token.revoked_at = utcnow()
