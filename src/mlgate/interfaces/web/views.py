"""What the pages show, assembled from the services: endpoint rows with readiness and live figures,
a version's promotion chain across environments, a request's decision state for the viewer, model cards
as safe HTML, links into each environment's MLflow UI."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup

from mlgate.domain import rollouts as rollout_rules
from mlgate.domain.audit_history import ServingAt, parse_moment
from mlgate.domain.gates import GateRefusal, RequestState, blocking_checks
from mlgate.domain.permissions import Principal
from mlgate.errors import MlgateError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.routes.endpoints import endpoint_public
from mlgate.interfaces.api.schemas.endpoints import EndpointPublic
from mlgate.interfaces.web import charts
from mlgate.services import audit_history
from mlgate.services.promotion import requests
from mlgate.services.promotion.requests import RequestView
from mlgate.services.registration import models
from mlgate.services.release import endpoints

log = logging.getLogger(__name__)

# CommonMark without raw HTML: a card's `<script>` is shown as text; unsafe link schemes are refused; an
# image from anywhere but mlgate itself is shown as its alt text (an outside image would tell its host who
# read the card, and when).
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False})


def _same_origin(src: str) -> bool:
    """A path on this server: no scheme, no host (`//host/...`), no backslash tricks."""
    return not urlsplit(src).scheme and not src.startswith(("//", "\\", "/\\")) and "\\" not in src


def _image(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    if _same_origin(str(token.attrGet("src") or "")):
        return self.image(tokens, idx, options, env)
    return escapeHtml(self.renderInlineAsText(token.children or [], options, env))


_MARKDOWN.add_render_rule("image", _image)


def card_html(text: str | None) -> Markup:
    return Markup(_MARKDOWN.render(text or ""))  # noqa: S704 (raw HTML disabled: markdown-it escapes it)


# --- links into MLflow's UI -------------------------------------------------------------------------
# The door serves each environment's MLflow UI at `/mlflow/<env>/` to a signed-in user, with their rights
# there. The UI routes in the fragment (MLflow 3's hash routes: `#/models/<name>/versions/<v>`, and
# `#/runs/<id>`, which finds the run's experiment and opens its page).


def mlflow_ui(env: str, route: str = "") -> str:
    """The address of `route` (a hash route without its `#/`) in `env`'s MLflow UI; its home without one."""
    home = f"/mlflow/{quote(env, safe='')}/"
    return f"{home}#/{route}" if route else home


def mlflow_pages(envs: list[str], route: str) -> dict[str, str]:
    """The same page (`models`, `experiments`) in each environment's MLflow UI."""
    return {env: mlflow_ui(env, route) for env in envs}


def mlflow_version(env: str, name: str, version: int) -> str:
    return mlflow_ui(env, f"models/{quote(name, safe='')}/versions/{version}")


def mlflow_run(env: str, run_id: str) -> str:
    return mlflow_ui(env, f"runs/{quote(run_id, safe='')}")


def version_run(ctx: AppContext, readable: list[str], run_id: str | None) -> str | None:
    """The page of a registered version's run, or None (no run, or the viewer may not read where it is).
    Models are registered only in the development environment and promotion copies the model, not its
    run, so a version's run is in development's MLflow whichever environment the version is in."""
    development = ctx.settings.env_names[0]
    return mlflow_run(development, run_id) if run_id and development in readable else None


# --- endpoints --------------------------------------------------------------------------------------


@dataclass
class SlotFigures:
    requests: int
    errors: int
    error_rate: float
    p95_ms: float | None
    mean_ms: float | None


@dataclass
class EndpointRow:
    public: EndpointPublic
    figures: dict[str, SlotFigures] = field(default_factory=dict)
    stats_note: str | None = None


def endpoint_rows(ctx: AppContext, env: str, *, name: str | None = None) -> tuple[list[EndpointRow], str | None]:
    """The environment's endpoints (or one), as the API shows them, with each slot's figures since its
    host started; the second value says why there are none (serving not running, host unreachable)."""
    views = [endpoints.get(ctx.db, env, name)] if name is not None else endpoints.list_endpoints(ctx.db, env)
    serving = ctx.serving
    if serving is None:
        return [], "serving is not running on this server"
    host = serving.status(env)
    rows = [EndpointRow(endpoint_public(view, host)) for view in views]
    try:
        stats = serving.backend.stats(env) if host.running else None
    except MlgateError as exc:
        stats = None
        for row in rows:
            row.stats_note = exc.message
    if stats:
        for row in rows:
            for slot in row.public.slots:
                window = rollout_rules.window({}, stats, endpoint=row.public.name, slot=slot.slot)
                raw = ((stats.get("endpoints") or {}).get(row.public.name) or {}).get(slot.slot) or {}
                total_s = float(raw.get("latency_sum_s") or 0.0)
                row.figures[slot.slot] = SlotFigures(
                    requests=window.requests,
                    errors=window.errors,
                    error_rate=window.error_rate,
                    p95_ms=window.p95_ms,
                    mean_ms=1000 * total_s / window.requests if window.requests else None,
                )
    return rows, None


# --- models -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainLink:
    environment: str
    version: int | None  # None: not (yet) in this environment, or not visible to the viewer
    digest: str | None
    visible: bool


def chain(ctx: AppContext, readable: list[str], name: str, digest: str) -> list[ChainLink]:
    """The version's promotion chain: the copies with the same digest in each environment, in order. A
    promoted copy has its source's digest (promotion checks it), so the digest links them."""
    links = []
    for env in ctx.settings.env_names:
        if env not in readable:
            links.append(ChainLink(env, None, None, visible=False))
            continue
        same = [v for v in models.list_versions(ctx.db, env, name=name) if v.digest == digest]
        found = same[-1] if same else None
        links.append(ChainLink(env, found.version if found else None, digest if found else None, visible=True))
    return links


def profile_charts(profile: dict[str, Any] | None) -> list[tuple[dict[str, Any], Markup | None]]:
    if not profile:
        return []
    columns = list(profile.get("features") or [])
    if profile.get("label"):
        columns.append(profile["label"])
    return [(column, charts.profile_histogram(column)) for column in columns]


def metrics_chart(evidence: dict[str, Any]) -> Markup | None:
    """The candidate's metrics against the champion's (or alone, when the target has no champion)."""
    comparison = evidence.get("comparison")
    if comparison:
        rows = comparison.get("metrics") or []
        champion = comparison.get("champion") or {}
        return charts.grouped_bars(
            "Metrics: candidate against the champion",
            [str(r["metric"]) for r in rows],
            [
                charts.Series("candidate", [r.get("candidate") for r in rows]),
                charts.Series(f"champion v{champion.get('version', '?')}", [r.get("champion") for r in rows]),
            ],
        )
    metrics = evidence.get("metrics") or {}
    if not metrics:
        return None
    names = sorted(metrics)
    return charts.grouped_bars(
        "Metrics of the candidate", names, [charts.Series("candidate", [float(metrics[n]) for n in names])]
    )


# --- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionState:
    """Whether the viewer may approve or reject, and if not, why (shown beside the disabled button)."""

    approve: str | None  # None: allowed; else the reason it is not
    reject: str | None
    blocking: dict[str, str]


def decision_state(ctx: AppContext, user: Principal, request: RequestView) -> DecisionState:
    checks = {k: str(v.get("status")) for k, v in (request.evidence.get("checks") or {}).items()}
    blocking = blocking_checks(request.required_checks, checks)
    if request.state != RequestState.OPEN.value:
        reason = f"This request is {request.state}: there is nothing left to decide."
        return DecisionState(reason, reason, blocking)
    try:
        requests.may_decide(ctx.settings, user, request)
    except GateRefusal as exc:
        return DecisionState(exc.message, exc.message, blocking)
    except MlgateError as exc:
        return DecisionState(exc.message, exc.message, blocking)
    if any(d.actor == user.name for d in request.decisions):
        reason = f"{user.name} already decided this request."
        return DecisionState(reason, reason, blocking)
    if blocking:
        listed = ", ".join(f"{name} ({status})" for name, status in blocking.items())
        return DecisionState(f"Required checks have not passed: {listed}.", None, blocking)
    return DecisionState(None, None, blocking)


# --- the audit page's "what served when" --------------------------------------------------------------


@dataclass(frozen=True)
class ServingAtForm:
    """The audit page's form (environment, time) and its answer, or why there is none."""

    env: str
    time: str
    answer: ServingAt | None = None
    error: str | None = None


def serving_at(ctx: AppContext, env: str, time: str) -> ServingAtForm:
    """What served in `env` at `time` (ISO 8601, no offset: UTC; empty: now), from the audit log; nothing
    asked (no environment), no answer."""
    if not env:
        return ServingAtForm(env="", time=time)
    try:
        moment = parse_moment(time) if time.strip() else ctx.plane.clock.now()
        answer = audit_history.serving_at(ctx.db, ctx.settings, environment=env, at=moment)
    except MlgateError as exc:
        return ServingAtForm(env=env, time=time, error=exc.message)
    return ServingAtForm(env=env, time=time, answer=answer)
