"""The web UI's pages and forms, served by `mlgate server` at `/`.

Reads are the services' sync calls (FastAPI runs these routes in its threadpool); every form is a POST
with the session's CSRF token, checked with the same permission rule as its API route, and carried out
by the same service call; refusals come back as messages on the page.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from fastapi import APIRouter, Request, Response

from mlgate.domain.endpoints import Mirror
from mlgate.domain.gates import RequestState
from mlgate.domain.permissions import Action, Principal
from mlgate.domain.throttle import Throttle
from mlgate.domain.tokens import display_prefix
from mlgate.errors import AuthenticationError, MlgateError, NotFoundError
from mlgate.interfaces.api.params import RowId, VersionNumber
from mlgate.interfaces.web import monitoring as monitoring_views
from mlgate.interfaces.web import session as sessions
from mlgate.interfaces.web import views
from mlgate.interfaces.web.core import (
    Ctx,
    Form,
    Refused,
    User,
    WebRoute,
    may,
    readable,
    redirect,
    render,
    require,
    safe_next,
    session_of,
    set_session_cookie,
)
from mlgate.services import audit, audit_integrity
from mlgate.services.identity import accounts
from mlgate.services.monitoring import monitors, retraining, runs
from mlgate.services.promotion import requests
from mlgate.services.registration import models
from mlgate.services.release import rollouts
from mlgate.services.training import jobs

router = APIRouter(route_class=WebRoute, include_in_schema=False)

log = logging.getLogger(__name__)

RECENT_JOBS = 5
AUDIT_LIMIT = 200
LOG_LINES = 200
CHART_RESULTS = 50  # the windows a monitor's charts span


# --- signing in and out -----------------------------------------------------------------------------


SIGNIN_REFUSED = "Not signed in: this token does not sign in here."
SIGNIN_FAILURES = 10  # failed sign-ins allowed per client address, and per token prefix, within the window
SIGNIN_WINDOW_S = 300.0
_THROTTLES_LOCK = threading.Lock()


def _signin_throttles(request: Request) -> tuple[Throttle, Throttle]:
    """This app's two sign-in throttles: by client address, by token prefix."""
    with _THROTTLES_LOCK:
        found: tuple[Throttle, Throttle] | None = getattr(request.app.state, "signin_throttles", None)
        if found is None:
            found = (Throttle(SIGNIN_FAILURES, SIGNIN_WINDOW_S), Throttle(SIGNIN_FAILURES, SIGNIN_WINDOW_S))
            request.app.state.signin_throttles = found
        return found


def _signin_keys(request: Request, token: str) -> tuple[str, str]:
    """The client's address and the token's display prefix (what `mlgate token list` shows, never more)."""
    return (request.client.host if request.client else "unknown"), display_prefix(token)


@router.get("/signin")
def signin_form(request: Request, next: str = "/") -> Response:
    return render(request, "signin.html", next=safe_next(next), error=None)


@router.post("/signin")
def signin(request: Request, ctx: Ctx, form: Form) -> Response:
    """An API token in, a session cookie out: the cookie names the token's id, never the token. Every
    refusal reads the same (unknown, revoked, expired and job tokens are not told apart), and failures
    are throttled per client address and per token prefix."""
    target = safe_next(form.get("next"))
    token = form.get("token", "").strip()
    keys = _signin_keys(request, token)
    throttles = _signin_throttles(request)
    now = time.monotonic()
    wait = max(throttle.retry_after(key, now) for throttle, key in zip(throttles, keys, strict=True))
    if wait:
        seconds = str(math.ceil(wait))
        error = f"Too many failed sign-ins: try again in {seconds} s."
        refused = render(request, "signin.html", 429, next=target, error=error)
        refused.headers["Retry-After"] = seconds
        return refused
    try:
        principal = accounts.authenticate(ctx.db, token)
        if principal.scope is not None or principal.token_id is None:
            raise AuthenticationError("a job's token cannot sign in")
    except AuthenticationError as exc:
        for throttle, key in zip(throttles, keys, strict=True):
            throttle.failed(key, now)
        log.info("sign-in refused (client %s): %s", keys[0], exc.message)  # no part of what was pasted
        return render(request, "signin.html", 401, next=target, error=SIGNIN_REFUSED)
    response = redirect(request, target)
    set_session_cookie(
        request, response, sessions.new_session(token_id=principal.token_id, user=principal.name)
    )  # a new CSRF token with the new session
    return response


@router.post("/signout")
def signout(request: Request, ctx: Ctx, form: Form) -> Response:
    sessions.end(ctx.db, session_of(request))
    response = redirect(request, "/signin")
    set_session_cookie(request, response, sessions.new_session())
    return response


# --- overview ---------------------------------------------------------------------------------------


@router.get("/")
def overview(request: Request, ctx: Ctx, user: User) -> Response:
    columns = []
    for env in readable(ctx, user):
        rows, note = views.endpoint_rows(ctx, env)
        columns.append(
            {
                "env": env,
                "mlflow": views.mlflow_ui(env),
                "endpoints": rows,
                "serving_note": note,
                "open": [r for r in requests.list_requests(ctx.db, env=env, state="open") if r.target_env == env],
                "jobs": jobs.list_jobs(ctx.db, env, limit=RECENT_JOBS),
                "firing": monitors.list_alerts(ctx.db, env, state=monitoring_views.FIRING),
            }
        )
    waiting = requests.waiting_for(ctx.db, ctx.settings, user)
    return render(request, "overview.html", user=user, columns=columns, waiting=waiting)


# --- requests ---------------------------------------------------------------------------------------


@router.get("/requests")
def request_inbox(request: Request, ctx: Ctx, user: User, state: str = "open") -> Response:
    envs = readable(ctx, user)
    seen: dict[int, requests.RequestView] = {}
    for env in envs:
        for found in requests.list_requests(ctx.db, env=env, state=state or None):
            seen.setdefault(found.id, found)
    waiting = requests.waiting_for(ctx.db, ctx.settings, user)
    listed = sorted(seen.values(), key=lambda r: r.id, reverse=True)
    states = [s.value for s in RequestState]
    return render(request, "requests.html", user=user, waiting=waiting, listed=listed, state=state, states=states)


def _visible_request(ctx: Ctx, user: Principal, request_id: int) -> requests.RequestView:
    """The request if the user reads one of its environments; anyone else learns nothing (404), as in
    the API's `locate`."""
    found = requests.get(ctx.db, request_id)
    envs = readable(ctx, user)
    if found.source_env not in envs and found.target_env not in envs:
        raise NotFoundError(f"no promotion request {request_id}")
    return found


@router.get("/requests/{request_id}")
def request_page(request: Request, ctx: Ctx, user: User, request_id: RowId) -> Response:
    found = _visible_request(ctx, user, request_id)
    envs = readable(ctx, user)
    digest = str(found.evidence.get("digest") or "")
    return render(
        request,
        "request.html",
        user=user,
        r=found,
        state=views.decision_state(ctx, user, found),
        chart=views.metrics_chart(found.evidence),
        card=views.card_html(found.evidence.get("card")),
        chain=views.chain(ctx, envs, found.model_name, digest) if digest else [],
        checks=found.evidence.get("checks") or {},
        run_link=views.version_run(ctx, envs, (found.evidence.get("lineage") or {}).get("run_id")),
    )


@router.post("/requests/{request_id}/decide")
def decide(request: Request, ctx: Ctx, user: User, form: Form, request_id: RowId) -> Response:
    """Approve or reject. The gate's approver role is checked as the API's DECIDE_GATE permission checks
    it; everything else (author, opener, checks, state) by `services.promotion.requests.decide`."""
    page = f"/requests/{request_id}"
    found = _visible_request(ctx, user, request_id)
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        return redirect(request, page, kind="error", text="Choose approve or reject.")
    gate = next((g for g in ctx.settings.gates if g.target == found.target_env), None)
    if gate is None or user.is_system or gate.approver_role not in user.roles_in(found.target_env):
        needs = f"needs the role: {gate.approver_role}" if gate else "has no gate leading into it"
        text = f"{user.name} may not do this: 'decide-gate' in '{found.target_env}' {needs}"
        return redirect(request, page, kind="error", text=text)
    comment = form.get("comment", "").strip() or None
    try:
        decided = requests.decide(
            ctx.db,
            ctx.settings,
            principal=user,
            env=found.target_env,
            request_id=request_id,
            approve=decision == "approve",
            comment=comment,
            base_url=ctx.base_url,
            events=ctx.events,
        )
    except MlgateError as exc:
        return redirect(request, page, kind="error", text=exc.message)
    verb = "Approved" if decision == "approve" else "Rejected"
    return redirect(request, page, kind="ok", text=f"{verb} request {request_id}: it is now {decided.state}.")


# --- models -----------------------------------------------------------------------------------------


@router.get("/models")
def model_list(request: Request, ctx: Ctx, user: User) -> Response:
    by_env = {env: models.list_versions(ctx.db, env) for env in readable(ctx, user)}
    return render(request, "models.html", user=user, by_env=by_env, mlflow=views.mlflow_pages(list(by_env), "models"))


@router.get("/models/{env}/{name}/{version}")
def model_page(request: Request, ctx: Ctx, user: User, env: str, name: str, version: VersionNumber) -> Response:
    require(ctx, user, Action.READ, env)
    found = models.get(ctx.db, env, name, version)
    envs = readable(ctx, user)
    metrics = {k: v for k, v in (found.lineage.get("metrics") or {}).items() if isinstance(v, int | float)}
    return render(
        request,
        "model.html",
        user=user,
        v=found,
        mlflow_version=views.mlflow_version(env, name, version),
        run_link=views.version_run(ctx, envs, found.run_id),
        chain=views.chain(ctx, envs, name, found.digest),
        metrics=metrics,
        chart=views.metrics_chart({"metrics": metrics}),
        card=views.card_html(found.card),
        histograms=views.profile_charts(found.profile),
    )


# --- endpoints --------------------------------------------------------------------------------------


@router.get("/endpoints")
def endpoint_list(request: Request, ctx: Ctx, user: User) -> Response:
    by_env = {}
    for env in readable(ctx, user):
        rows, note = views.endpoint_rows(ctx, env)
        by_env[env] = {"rows": rows, "note": note}
    return render(request, "endpoints.html", user=user, by_env=by_env)


@router.get("/endpoints/{env}/{name}")
def endpoint_page(request: Request, ctx: Ctx, user: User, env: str, name: str) -> Response:
    require(ctx, user, Action.READ, env)
    rows, note = views.endpoint_rows(ctx, env, name=name)
    if not rows:
        raise Refused(503, note or "serving is not running")
    return render(
        request,
        "endpoint.html",
        user=user,
        env=env,
        row=rows[0],
        can_deploy=may(ctx, user, Action.DEPLOY, env),
        deny=None if may(ctx, user, Action.DEPLOY, env) else _deploy_denial(ctx, user, env),
        history=rollouts.list_rollouts(ctx.db, env, endpoint=name, limit=20),
    )


def _deploy_denial(ctx: Ctx, user: Principal, env: str) -> str:
    try:
        require(ctx, user, Action.DEPLOY, env)
    except Refused as exc:
        return exc.message
    return ""


def _weights(form: dict[str, str]) -> dict[str, int]:
    weights = {}
    for key, value in form.items():
        if key.startswith("weight-"):
            slot = key.removeprefix("weight-")
            try:
                weights[slot] = int(value or 0)
            except ValueError:
                raise Refused(422, f"the weight of slot '{slot}' is not a whole number") from None
    return weights


@router.post("/endpoints/{env}/{name}/traffic")
def shift_traffic(request: Request, ctx: Ctx, user: User, form: Form, env: str, name: str) -> Response:
    require(ctx, user, Action.DEPLOY, env)
    page = f"/endpoints/{env}/{name}"
    serving = ctx.serving
    if serving is None:
        return redirect(request, page, kind="error", text="serving is not running on this server")
    mirror: Mirror | bool | None = False  # keep the mirror as it is
    try:
        weights = _weights(form)
        if form.get("mirror-slot"):
            mirror = Mirror(form["mirror-slot"], float(form.get("mirror-percent") or 0))
        elif form.get("clear-mirror"):
            mirror = None
        serving.shift(env, name, weights, mirror=mirror, actor=user.name)
    except (MlgateError, Refused, ValueError) as exc:
        text = getattr(exc, "message", None) or str(exc)
        return redirect(request, page, kind="error", text=text)
    shown = ", ".join(f"{slot}={weight}" for slot, weight in weights.items())
    return redirect(request, page, kind="ok", text=f"Traffic of {name} in {env} is now {shown}.")


@router.post("/endpoints/{env}/{name}/rollback")
def rollback(request: Request, ctx: Ctx, user: User, form: Form, env: str, name: str) -> Response:
    require(ctx, user, Action.DEPLOY, env)
    page = f"/endpoints/{env}/{name}"
    try:
        view = ctx.serving.rollback(env, name, actor=user.name)
    except MlgateError as exc:
        return redirect(request, page, kind="error", text=exc.message)
    return redirect(request, page, kind="ok", text=f"Rolled back {name} in {env} to revision {view.revision}'s state.")


# --- jobs -------------------------------------------------------------------------------------------


@router.get("/jobs")
def job_list(request: Request, ctx: Ctx, user: User) -> Response:
    by_env = {env: jobs.list_jobs(ctx.db, env, limit=50) for env in readable(ctx, user)}
    return render(
        request, "jobs.html", user=user, by_env=by_env, mlflow=views.mlflow_pages(list(by_env), "experiments")
    )


@router.get("/jobs/{env}/{job_id}")
def job_page(request: Request, ctx: Ctx, user: User, env: str, job_id: RowId) -> Response:
    require(ctx, user, Action.READ, env)
    job = jobs.get(ctx.db, env, job_id)
    log_text, _ = jobs.log_tail(ctx.settings, job_id, lines=LOG_LINES)
    run_links = {run: views.mlflow_run(env, run) for run in job.run_ids}  # a job's runs are in its environment
    return render(request, "job.html", user=user, job=job, log=log_text, lines=LOG_LINES, run_links=run_links)


# --- audit ------------------------------------------------------------------------------------------


@router.get("/audit")
def audit_page(
    request: Request,
    ctx: Ctx,
    user: User,
    actor: str = "",
    action: str = "",
    environment: str = "",
    at_env: str = "",
    at_time: str = "",
) -> Response:
    """The audit log, as the API's: admins only; with the chain's verification, and what served in an
    environment at a time (`at_env`, `at_time`), replayed from the log."""
    require(ctx, user, Action.ADMINISTER, None)
    where = audit.AuditFilter(
        actor=actor or None, action=action or None, environment=environment or None, limit=AUDIT_LIMIT
    )
    events = audit.list_events(ctx.db, where=where)
    return render(
        request,
        "audit.html",
        user=user,
        events=events,
        verified=audit_integrity.verify(ctx.db, ctx.settings, ctx.plane.audit_keys),
        filters={"actor": actor, "action": action, "environment": environment},
        envs=ctx.settings.env_names,
        serving_at=views.serving_at(ctx, at_env, at_time),
    )


# --- monitoring -------------------------------------------------------------------------------------


@router.get("/monitoring")
def monitoring(request: Request, ctx: Ctx, user: User) -> Response:
    by_env = {env: monitoring_views.monitor_rows(ctx, env) for env in readable(ctx, user)}
    return render(request, "monitoring.html", user=user, by_env=by_env)


@router.get("/monitoring/{env}/{name}")
def monitor_page(request: Request, ctx: Ctx, user: User, env: str, name: str) -> Response:
    require(ctx, user, Action.READ, env)
    monitor = monitors.get(ctx.db, env, name)
    results = monitors.results(ctx.db, env, name, limit=CHART_RESULTS)  # newest first
    latest = results[0] if results else None
    return render(
        request,
        "monitor.html",
        user=user,
        m=monitor,
        latest=latest,
        drift=(latest.values.get("data-drift") if latest else None) or {},
        sections=monitoring_views.sections(monitor, results[::-1]),
        alerts=monitors.list_alerts(ctx.db, env, name=name),
        can_run=may(ctx, user, Action.MANAGE_MONITORS, env),
        train_env=ctx.settings.env_names[0],  # where retraining runs its jobs
    )


@router.post("/monitoring/{env}/{name}/run")
def run_monitor(request: Request, ctx: Ctx, user: User, form: Form, env: str, name: str) -> Response:
    """Evaluate the monitor's window now, as the API's run route does (an alert it fires starts the
    retraining a `retrain` monitor asks for)."""
    require(ctx, user, Action.MANAGE_MONITORS, env)
    page = f"/monitoring/{env}/{name}"
    try:
        outcome = runs.run(ctx.db, ctx.settings, env, name, base_url=ctx.base_url)
        if outcome.change == "fire" and outcome.alert is not None:
            retraining.start(ctx.db, ctx.settings, outcome.alert.id)
    except MlgateError as exc:
        return redirect(request, page, kind="error", text=exc.message)
    result = outcome.result
    change = {"fire": "; the alert fired", "resolve": "; the alert resolved"}.get(outcome.change or "", "")
    return redirect(request, page, kind="ok", text=f"Ran {name}: {result.verdict} over {result.rows} rows{change}.")
