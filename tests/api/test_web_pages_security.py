"""What every web page tells the browser to refuse (outside scripts, styles and images, framing, Referer to
other sites); model cards that show no image from outside mlgate; sign-in that refuses every bad token
alike and throttles failures per client address and per token prefix."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from mlgate.interfaces.web.routes import SIGNIN_FAILURES, SIGNIN_REFUSED
from mlgate.interfaces.web.views import card_html
from tests.support.project import Project, bearer


def _sign_in(client: httpx.Client, token: str) -> httpx.Response:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text)
    assert csrf, "no CSRF field on the sign-in page"
    return client.post("/signin", data={"csrf": csrf.group(1), "token": token}, follow_redirects=False)


def test_pages_forbid_framing_outside_content_and_referers(api: httpx.Client, project: Project) -> None:
    for path in ("/signin", "/requests/1"):  # signed out: the sign-in page, and where a link leads first
        page = api.get(path)
        assert page.status_code == 200 and "<form" in page.text, (path, page.status_code)
        policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == policy["script-src"] == policy["img-src"] == "'self'", policy
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'", policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-content-type-options"] == "nosniff"


def test_a_card_shows_its_own_images_and_only_the_alt_text_of_outside_ones() -> None:
    card = card_html(
        "# Risk model\n\n![roc curve](/static/roc.png) ![tracker](https://tracker.example/p.png?who=lee) "
        "![relative](//tracker.example/p.png) ![plain](HTTP://TRACKER.EXAMPLE/p.png)"
    )
    assert '<img src="/static/roc.png" alt="roc curve" />' in card
    assert "tracker.example" not in card.lower()
    for alt in ("tracker", "relative", "plain"):
        assert alt in card  # shown as text
    assert card.count("<img") == 1


def test_every_refused_sign_in_reads_the_same(api: httpx.Client, project: Project) -> None:
    issued = api.post("/api/v1/me/tokens", headers=bearer(project.tokens["vic"]), json={"name": "old"}).json()
    api.delete(f"/api/v1/me/tokens/{issued['id']}", headers=bearer(project.tokens["vic"]))
    for token in ("mlg_" + "A" * 43, issued["token"], "not a token at all"):  # unknown, revoked, malformed
        refused = _sign_in(api, token)
        assert refused.status_code == 401, refused.text[:300]
        assert SIGNIN_REFUSED in refused.text
        assert "revoked" not in refused.text and "unknown" not in refused.text
    assert _sign_in(api, project.tokens["vic"]).status_code == 303


def test_failed_sign_ins_are_throttled_per_client_and_per_token_prefix(api: httpx.Client, project: Project) -> None:
    guesser = TestClient(api.app, client=("203.0.113.7", 40000))  # type: ignore[attr-defined]
    for n in range(SIGNIN_FAILURES):
        assert _sign_in(guesser, f"mlg_{n:08d}" + "B" * 35).status_code == 401
    blocked = _sign_in(guesser, project.tokens["dana"])  # even a good token, from this client, for now
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in blocked.text
    assert _sign_in(api, project.tokens["dana"]).status_code == 303  # another client is not held back

    # One token's prefix guessed from many addresses: held back whatever the address.
    target = "mlg_" + "C" * 43
    for n in range(SIGNIN_FAILURES):
        other = TestClient(api.app, client=(f"198.51.100.{n + 1}", 40000))  # type: ignore[attr-defined]
        assert _sign_in(other, target).status_code == 401
    fresh = TestClient(api.app, client=("192.0.2.200", 40000))  # type: ignore[attr-defined]
    assert _sign_in(fresh, target).status_code == 429
    assert _sign_in(fresh, project.tokens["lee"]).status_code == 303


def test_a_form_over_its_bound_is_refused_before_it_is_read(api: httpx.Client) -> None:
    # Declared too large: refused on the header alone (the body is never read).
    declared = api.post(
        "/signin",
        content=b"csrf=x",
        headers={"content-type": "application/x-www-form-urlencoded", "content-length": str(64 * 1024 * 1024)},
    )
    assert declared.status_code == 413 and "too large" in declared.text
    # Sent without a length (chunked), refused once the bound is passed.
    chunks = iter([b"csrf=" + b"x" * (48 * 1024), b"y" * (48 * 1024)])
    streamed = api.post("/signin", content=chunks, headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413 and "too large" in streamed.text
