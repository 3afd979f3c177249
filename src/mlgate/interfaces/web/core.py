"""The web UI's plumbing: templates, the route class that turns refusals into pages, the signed-in user,
CSRF-checked forms, flash messages and the permission checks pages share with the API.

Authorization follows the API's table (`mlgate.domain.permissions`): a page about an environment needs
`read` there, a form needs the action its API route declares, and the services enforce their own rules
(gates, separation of duties) as they do for the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mlgate.domain.permissions import Action, Principal, denial_message
from mlgate.errors import MlgateError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.web import session as sessions
from mlgate.interfaces.web.monitoring import breach_text
from mlgate.interfaces.web.session import Session, Signer

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
FLASH_COOKIE = "mlgate_flash"
MAX_FORM_BYTES = 64 * 1024
CSRF_FIELD = "csrf"


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in form, then back."""


class Refused(Exception):
    """A page or form the user may not have: answered as an HTML page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda digest: (digest or "")[:12]
    env.filters["when"] = lambda at: at.strftime("%Y-%m-%d %H:%M:%S") if at else ""
    env.filters["pct"] = lambda value: "n/a" if value is None else f"{100 * value:.2f}%"
    env.filters["num"] = lambda value: "n/a" if value is None else f"{value:.4g}"
    env.filters["breaches"] = breach_text
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env


def context_of(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def signer_of(request: Request) -> Signer:
    """The app's cookie signer, made on first use (which creates the home's secret if it has none)."""
    state = request.app.state
    signer: Signer | None = getattr(state, "web_signer", None)
    if signer is None:
        signer = Signer(context_of(request).settings.home)
        state.web_signer = signer
    return signer


def templates_of(request: Request) -> Environment:
    state = request.app.state
    env: Environment | None = getattr(state, "web_templates", None)
    if env is None:
        env = _templates()
        state.web_templates = env
    return env


def session_of(request: Request) -> Session:
    """The request's session, or a new anonymous one (with a CSRF token) that the response will set."""
    cached: Session | None = getattr(request.state, "web_session", None)
    if cached is not None:
        return cached
    loaded = signer_of(request).load(request.cookies.get(sessions.COOKIE))
    if loaded is None:
        loaded = sessions.new_session()
        request.state.web_session_new = True
    request.state.web_session = loaded
    return loaded


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        sessions.COOKIE,
        signer_of(request).dump(session),
        max_age=sessions.MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


# --- flash messages: one message carried across a redirect (after a form), signed like the session ---


def _flash_serializer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(sessions.secret_key(context_of(request).settings.home), salt="mlgate-web-flash")


def flash(request: Request, response: Response, kind: str, text: str) -> None:
    value = _flash_serializer(request).dumps({"kind": kind, "text": text})
    response.set_cookie(FLASH_COOKIE, value, httponly=True, samesite="lax", secure=request.url.scheme == "https")


def take_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = _flash_serializer(request).loads(raw)
    except BadSignature:
        return None
    return {"kind": str(data.get("kind")), "text": str(data.get("text"))} if isinstance(data, dict) else None


# Every page: scripts, styles and images from mlgate itself only, no plugins, forms post only back here,
# never framed (clickjacking), no URL (request ids, model names) sent to other sites in a Referer.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def redirect(request: Request, url: str, *, kind: str | None = None, text: str = "") -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if kind:
        flash(request, response, kind, text)
    return response


# --- rendering --------------------------------------------------------------------------------------


def render(
    request: Request, template: str, status_code: int = 200, *, user: Principal | None = None, **values: Any
) -> HTMLResponse:
    session = session_of(request)
    message = take_flash(request)
    html = (
        templates_of(request)
        .get_template(template)
        .render(
            request=request,
            user=user,
            csrf=session.csrf,
            flash=message,
            status_code=status_code,
            is_admin=user is not None and user.may(Action.ADMINISTER, None, None),
            **values,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    if getattr(request.state, "web_session_new", False):
        set_session_cookie(request, response, session)
    if message is not None:
        response.delete_cookie(FLASH_COOKIE)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(PAGE_HEADERS)
    return response


def _sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/signin?next={quote(target, safe='/')}"


class WebRoute(APIRoute):
    """Answers refusals with pages, not JSON: no session redirects to sign-in and back, a refusal or a
    service error renders the error page with its status and message, a path out of its bounds is a 404."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                if request.method == "GET":
                    return RedirectResponse(_sign_in_url(request), status_code=303)
                return render(request, "error.html", 401, message="Your session has ended: sign in again.")
            except Refused as exc:
                return render(request, "error.html", exc.status, user=_user_or_none(request), message=exc.message)
            except MlgateError as exc:
                return render(request, "error.html", exc.status, user=_user_or_none(request), message=exc.message)
            except RequestValidationError as exc:  # a path naming no page (an id out of range), a bad form
                in_path = all(error.get("loc", ("",))[0] == "path" for error in exc.errors())
                status, message = (404, "No such page.") if in_path else (400, "That request is not valid.")
                return render(request, "error.html", status, user=_user_or_none(request), message=message)

        return handle


def _user_or_none(request: Request) -> Principal | None:
    user: Principal | None = getattr(request.state, "web_user", None)
    return user


# --- dependencies -----------------------------------------------------------------------------------


def current_user(request: Request) -> Principal:
    """The signed-in person, checked against their token on every request."""
    session = session_of(request)
    principal = sessions.principal_of_session(context_of(request).db, session)
    if principal is None:
        raise SignInRequired
    request.state.web_user = principal
    return principal


async def _form_body(request: Request) -> bytes:
    """The form's bytes, refused (413) on a Content-Length over the bound before anything is read, and
    while reading once the bound is passed: a form is never held whole beyond `MAX_FORM_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise Refused(413, "this form is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise Refused(413, "this form is too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form's fields, once its CSRF token matches the session's; 403 otherwise."""
    body = await _form_body(request)
    fields = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    loaded = signer_of(request).load(request.cookies.get(sessions.COOKIE))
    if not sessions.csrf_matches(loaded, fields.get(CSRF_FIELD)):
        raise Refused(
            403,
            "This form was sent without its CSRF token, or with one from another session: "
            "reload the page and send it again.",
        )
    return fields


User = Annotated[Principal, Depends(current_user)]
Form = Annotated[dict[str, str], Depends(checked_form)]
Ctx = Annotated[AppContext, Depends(context_of)]


# --- permissions --------------------------------------------------------------------------------------


def may(ctx: AppContext, user: Principal, action: Action, env: str) -> bool:
    return user.may(action, env, ctx.settings.environment(env).kind)


def require(ctx: AppContext, user: Principal, action: Action, env: str | None) -> None:
    """The API's rule for `action` (in `env`), as a 403 page that names what is missing."""
    kind = ctx.settings.environment(env).kind if env is not None else None
    if not user.may(action, env, kind):
        raise Refused(403, f"{user.name} may not do this: {denial_message(action, env, kind)}")


def readable(ctx: AppContext, user: Principal) -> list[str]:
    """The environments the user may read, in promotion order."""
    return [env.name for env in ctx.settings.environments if user.may(Action.READ, env.name, env.kind)]


def safe_next(target: str | None) -> str:
    """Only a path on this server: never another site (`//host`, `https://...`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
