"""The web UI in a real browser (headless Chromium through Selenium) against a live `mlgate server`.

The world (tests/support/web_world.py), from a copy of the staged template: diabetes:1 and :2 in
staging, deployed side by side on the staging endpoint, the same two in production side by side on
`web`, and two gate A requests dana's registrations opened, waiting for lee. A screenshot of each page
visited is written under the pytest tmp folder; the folder is named in the test output.

The route walker (tests/test_route_permissions.py) leaves the web pages out; their rules are checked here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.interfaces.sdk.client import Client
from mlgate.interfaces.web import charts, views
from tests.support.project import stop_server
from tests.support.serving_world import FEATURES, rows
from tests.support.web_world import (
    ENDPOINT,
    PRODUCTION_ENDPOINT,
    WAIT_S,
    Browser,
    WebWorld,
    build_web,
    chromium,
    csrf_of,
    screenshots,
    signed_in,
)
from tests.support.worlds import Template


@pytest.fixture(scope="module")
def world(staged_template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebWorld]:
    built = build_web(staged_template, tmp_path_factory.mktemp("web-world"))
    yield built
    stop_server(built.served.server)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    with screenshots(tmp_path_factory, request, "web-ui-screenshots") as folder:
        yield folder


@pytest.fixture(scope="module")
def browser(world: WebWorld, shots: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(world.url, shots, tmp_path_factory.mktemp("chromium-profile")) as opened:
        yield opened


def http_session(world: WebWorld, user: str) -> AbstractContextManager[tuple[httpx.Client, str]]:
    return signed_in(world.url, world.tokens[user])


def wait_for_state(world: WebWorld, request_id: int, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    with Client(world.url, world.tokens["lee"]) as lee:
        while (found := lee.promotion_request(request_id))["state"] not in states:
            assert time.monotonic() < deadline, found
            time.sleep(0.3)
    return found


# ---------------------------------------------------------------------------------------------------


def test_a_request_link_signs_in_then_lee_approves_from_the_inbox(browser: Browser, world: WebWorld) -> None:
    request_id = world.requests[0]
    browser.driver.delete_all_cookies()
    browser.page(f"/requests/{request_id}")  # the link an email carries
    assert browser.path == f"/signin?next=/requests/{request_id}"
    browser.shot("01-signin")
    browser.find("#token").send_keys(world.tokens["lee"])
    browser.find("#signin-button").click()
    browser.find("#signed-in-as")  # the next page, not the sign-in form's h1 before it goes
    assert browser.text("h1").startswith(f"Request {request_id}:")  # back where the link pointed
    assert browser.path == f"/requests/{request_id}"

    browser.page("/")
    assert "waiting for your decision" in browser.text("#waiting-callout")
    overview = browser.body()
    assert "diabetes:1" in overview and "diabetes:2" in overview  # the slots serving in staging
    browser.shot("02-overview")

    browser.page("/requests")
    inbox = browser.find("#inbox")
    assert {int(a.get_attribute("data-request")) for a in inbox.find_elements("css selector", "a.request-link")} == set(
        world.requests
    )
    browser.shot("03-requests-inbox")
    inbox.find_element("css selector", f'a[data-request="{request_id}"]').click()

    # The evidence: digest, the promotion chain, metrics against staging's champion, lineage, the card.
    with Client(world.url, world.tokens["lee"]) as lee:
        evidence = lee.promotion_request(request_id)["evidence"]
    assert browser.text("#digest") == evidence["digest"]
    assert browser.find("#metrics-chart svg").get_attribute("aria-label") == "Metrics: candidate against the champion"
    assert "accuracy" in browser.text("#metrics-table")
    assert evidence["lineage"]["run_id"] in browser.text("#lineage")
    assert browser.text("#model-card")
    assert browser.find("#approve").is_enabled()
    browser.shot("04-request-evidence")

    browser.find("#comment").send_keys("lineage and accuracy look right")
    browser.find("#approve").click()
    assert f"Approved request {request_id}" in browser.text("#flash")
    assert "lineage and accuracy look right" in browser.text("#decisions")
    assert browser.text("#request-state") in ("approved", "promoting", "promoted")
    assert not browser.find("#approve").is_enabled()  # decided: nothing left for lee to do
    browser.shot("05-request-approved")
    promoted = wait_for_state(world, request_id, {"promoted"})
    browser.page(f"/requests/{request_id}")
    assert browser.text("#request-state") == "promoted"

    # The admin sees the decision in the audit log, and the chain verified.
    browser.sign_out()
    browser.sign_in(world.tokens["admin"], then="/audit?action=request.approve")
    events = browser.text("#audit-events")
    assert f"lee request.approve staging request:{request_id}" in events
    assert "The log verifies" in browser.text("#verify")
    browser.shot("06-audit")
    browser.page(f"/models/staging/diabetes/{promoted['target_version']}")
    assert browser.text("#digest") == evidence["digest"]
    browser.shot("07-model")


def test_dana_sees_approve_disabled_with_the_reason(browser: Browser, world: WebWorld) -> None:
    request_id = world.requests[1]
    browser.sign_in(world.tokens["dana"], then=f"/requests/{request_id}")
    assert not browser.find("#approve").is_enabled()
    assert not browser.find("#reject").is_enabled()
    reason = browser.text("#approve-reason")
    assert "gate A needs the role 'lead-data-scientist' in 'staging'; dana has it not" in reason
    browser.shot("08-request-disabled-for-dana")
    # The server refuses too, whatever the page shows: the form posted by hand.
    with http_session(world, "dana") as (client, csrf):
        answer = client.post(
            f"/requests/{request_id}/decide", data={"csrf": csrf, "decision": "approve"}, follow_redirects=True
        )
        assert "dana may not do this: &#39;decide-gate&#39; in &#39;staging&#39;" in answer.text
    assert wait_for_state(world, request_id, {"open"})["decisions"] == []


def test_olu_changes_traffic_in_production_and_the_host_follows(browser: Browser, world: WebWorld) -> None:
    page = f"/endpoints/production/{PRODUCTION_ENDPOINT}"
    browser.sign_in(world.tokens["olu"], then=page)
    assert "diabetes:1" in browser.text('tr[data-slot="blue"]')
    assert "diabetes:2" in browser.text('tr[data-slot="green"]')
    assert browser.text('tr[data-slot="green"] td.traffic') == "0%"
    browser.shot("09-endpoint-production")
    for slot, weight in (("blue", "30"), ("green", "70")):
        field = browser.find(f"#weight-{slot}")
        field.clear()
        field.send_keys(weight)
    assert browser.text("#weight-sum") == "Sum: 100%"
    browser.find("#traffic-button").click()
    assert "is now blue=30, green=70" in browser.text("#flash")
    assert browser.text('tr[data-slot="green"] td.traffic') == "70%"
    browser.shot("10-endpoint-production-traffic-changed")
    with Client(world.url, world.tokens["vic"]) as vic:
        shown = vic.endpoint("production", PRODUCTION_ENDPOINT)
    assert {s["slot"]: s["traffic"] for s in shown["slots"]} == {"blue": 30, "green": 70}
    assert shown["updated_by"] == "olu"

    # The production host splits the web app's calls as the page said.
    with Client(world.url, world.tokens["olu"]) as olu:
        key = olu.rotate_key("production", PRODUCTION_ENDPOINT, "primary")["key"]
    host = world.served.host_url("production")
    answered = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as web_app:
        for _ in range(200):
            answer = web_app.post(
                f"{host}/endpoints/{PRODUCTION_ENDPOINT}/invocations",
                json={"dataframe_split": {"columns": FEATURES, "data": rows(1)}},
            )
            assert answer.status_code == 200, answer.text
            answered.append(answer.headers["mlgate-deployment"])
    assert 100 <= answered.count("green") <= 180 and answered.count("blue") == 200 - answered.count("green")
    browser.page("/")  # the three environments side by side, production serving both versions
    production = browser.find('section[aria-labelledby="env-production"]').text
    assert "blue: diabetes:1 30%" in production and "green: diabetes:2 70%" in production, production
    browser.shot("11-overview-olu")

    # A viewer sees the endpoint but not the forms, and is told why.
    browser.sign_in(world.tokens["vic"], then=page)
    assert "'deploy' in 'production' needs one of the roles: operator" in browser.text("#deploy-reason")
    assert not browser.driver.find_elements("css selector", "#traffic-form")

    # The admin's audit page answers what serves now from the audit log alone, and names a bad time.
    browser.sign_in(world.tokens["admin"], then="/audit?at_env=production")
    served = browser.text("#serving-at-slots")
    assert f"{PRODUCTION_ENDPOINT} green diabetes 2 70%" in served, served
    assert f"{PRODUCTION_ENDPOINT} blue diabetes 1 30%" in served, served
    browser.page("/audit?at_env=production&at_time=yesterday")
    assert "invalid time 'yesterday'" in browser.text("#serving-at-error")


def test_forms_without_their_csrf_token_are_refused(world: WebWorld) -> None:
    path = f"/endpoints/staging/{ENDPOINT}/traffic"
    weights = {"weight-blue": "0", "weight-green": "100"}
    with http_session(world, "olu") as (client, csrf):
        for sent in ({}, {"csrf": "forged"}):
            answer = client.post(path, data=weights | sent)
            assert answer.status_code == 403, answer.text
            assert "This form was sent without its CSRF token" in answer.text
        # Nor is a CSRF token anything without the session it belongs to.
        stranger = httpx.post(world.url + path, data=weights | {"csrf": csrf}, timeout=30)
        assert stranger.status_code == 401 and "sign in again" in stranger.text
        # The sign-in form is protected too.
        assert httpx.post(world.url + "/signin", data={"token": world.tokens["olu"]}).status_code == 403
    with Client(world.url, world.tokens["vic"]) as vic:
        weights_now = {s["slot"]: s["traffic"] for s in vic.endpoint("staging", ENDPOINT)["slots"]}
    assert weights_now["green"] != 100  # nothing changed


def test_pages_a_role_may_not_see_are_refused(browser: Browser, world: WebWorld) -> None:
    browser.sign_in(world.tokens["lee"], then="/audit")
    assert "lee may not do this: 'administer' needs one of the roles: admin" in browser.text("#error-message")
    browser.shot("12-audit-refused")
    assert not browser.driver.find_elements("css selector", 'a[href="/audit"]')  # not offered either
    with http_session(world, "dana") as (client, _):
        assert client.get("/audit").status_code == 403
        refused = client.get(f"/endpoints/production/{ENDPOINT}")
        assert refused.status_code == 403
        assert "&#39;read&#39; in &#39;production&#39; needs a role bound to &#39;production&#39;" in refused.text
        assert client.get("/models/staging/diabetes/1").status_code == 403
        # Lists show only the environments dana reads.
        assert "staging" not in re.sub(r"<[^>]+>", " ", client.get("/models").text).split("Models", 2)[-1]
    for page in ("/", "/requests", "/models", "/endpoints", "/jobs", "/monitoring"):
        browser.page(page)
        browser.find("h1")
        browser.shot(f"13-lee-{page.strip('/') or 'overview'}")


def test_signing_out_and_revoking_the_token_end_the_session(browser: Browser, world: WebWorld) -> None:
    browser.sign_in(world.tokens["vic"])
    browser.sign_out()
    browser.page("/requests")
    assert browser.path == "/signin?next=/requests"

    # Signing out ends the session itself: a copy of its cookie kept elsewhere is refused from then on.
    with http_session(world, "vic") as (client, csrf):
        copied = client.cookies["mlgate_session"]
        assert client.post("/signout", data={"csrf": csrf}).status_code == 303
    with httpx.Client(base_url=world.url, timeout=30, cookies={"mlgate_session": copied}) as elsewhere:
        refused = elsewhere.get("/")
        assert refused.status_code == 303 and refused.headers["location"] == "/signin?next=/"

    # A session stands on its token: revoking the token ends it on the next request.
    with Client(world.url, world.tokens["admin"]) as admin:
        issued = admin.create_token(user="vic", name="browser")
        with httpx.Client(base_url=world.url, timeout=30) as client:
            csrf = csrf_of(client.get("/signin").text)
            assert client.post("/signin", data={"csrf": csrf, "token": issued["token"]}).status_code == 303
            assert client.get("/").status_code == 200
            assert "mlg_" not in (client.cookies.get("mlgate_session") or "")  # the cookie never holds the token
            admin.revoke_token(issued["id"])
            gone = client.get("/")
            assert gone.status_code == 303 and gone.headers["location"] == "/signin?next=/"
    # A garbage token does not sign in.
    browser.driver.delete_all_cookies()
    browser.page("/signin")
    browser.find("#token").send_keys("mlg_" + "A" * 43)
    browser.find("#signin-button").click()
    assert browser.text("#signin-error") == "Not signed in: this token does not sign in here."
    browser.shot("14-signin-refused")


# MLflow's UI asks the door for a write with the session's CSRF proof, as its own ajax calls send it.
CREATE_EXPERIMENT = """
const done = arguments[arguments.length - 1];
const named = "mlflow-request-header-X-Mlgate-Csrf=";
const cookie = document.cookie.split("; ").find((c) => c.startsWith(named));
const proof = cookie ? cookie.slice(named.length) : "";
fetch("ajax-api/2.0/mlflow/experiments/create", {
  method: "POST",
  headers: {"Content-Type": "application/json", "X-Mlgate-Csrf": proof},
  body: JSON.stringify({name: "vic-was-here"}),
}).then(async (answer) => done({proof, status: answer.status, body: await answer.json()}))
  .catch((error) => done({proof, status: 0, body: String(error)}));
"""


def test_the_mlflow_ui_opens_through_the_door_with_the_users_rights(browser: Browser, world: WebWorld) -> None:
    with Client(world.url, world.tokens["vic"]) as vic:
        request = vic.promotion_request(world.requests[1])
    version, run_id = request["source_version"], request["evidence"]["lineage"]["run_id"]

    # dana, not signed in, is sent to sign in and back to dev's MLflow UI, which lists her experiment.
    browser.driver.delete_all_cookies()
    browser.page("/mlflow/dev/")
    assert browser.path == "/signin?next=/mlflow/dev/"
    browser.find("#token").send_keys(world.tokens["dana"])
    browser.find("#signin-button").click()
    browser.showing("serving", exact=True)  # the experiment her script logged its runs in
    assert browser.path == "/mlflow/dev/"
    browser.shot("15-mlflow-dev")

    # Her version's page links to it and to its run in dev's MLflow UI; the run opens there.
    browser.page(f"/models/dev/diabetes/{version}")
    assert (
        browser.find("#mlflow-version").get_dom_attribute("href") == f"/mlflow/dev/#/models/diabetes/versions/{version}"
    )
    assert browser.find("#mlflow-run").get_dom_attribute("href") == f"/mlflow/dev/#/runs/{run_id}"
    browser.find("#mlflow-run").click()
    browser.showing(run_id)
    assert browser.path.startswith("/mlflow/dev/#/experiments/")  # the UI found the run's experiment
    browser.shot("16-mlflow-dev-run")

    # vic reads production: the promoted version links to production's registry, its run to dev's.
    with Client(world.url, world.tokens["vic"]) as vic:
        promoted = vic.model_version("production", "diabetes", 1)
    browser.sign_in(world.tokens["vic"], then="/models/production/diabetes/1")
    assert (
        browser.find("#mlflow-version").get_dom_attribute("href") == "/mlflow/production/#/models/diabetes/versions/1"
    )
    assert browser.find("#mlflow-run").get_dom_attribute("href") == f"/mlflow/dev/#/runs/{promoted['run_id']}"
    browser.page("/mlflow/production/#/models")
    browser.showing("diabetes", exact=True)
    browser.shot("17-mlflow-production-models")

    # A write from the page, with the session's proof, is still refused: production is written by promotion.
    browser.driver.set_script_timeout(WAIT_S)
    answer = browser.driver.execute_async_script(CREATE_EXPERIMENT)
    assert answer["proof"], "the UI page did not hand over the session's CSRF proof"
    assert answer["status"] == 403, answer
    assert answer["body"]["error_code"] == "PERMISSION_DENIED", answer
    assert "'production' is written only by promotion" in answer["body"]["message"], answer


def test_model_cards_and_charts_escape_what_they_are_given() -> None:
    card = views.card_html("# Card\n<script>alert(1)</script>\n\n[click](javascript:alert(1)) **bold**")
    assert "<h1>Card</h1>" in card and "<strong>bold</strong>" in card
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert 'href="javascript' not in card
    chart = charts.grouped_bars("a <title>", ["<b>auc</b>"], [charts.Series("<i>x</i>", [0.5])])
    assert "<b>" not in chart and "<i>" not in chart and "&lt;b&gt;auc&lt;/b&gt;" in chart
    histogram = charts.profile_histogram({"name": "<age>", "bins": {"edges": [0.0, 1.0, 2.0], "counts": [3, 1]}})
    assert histogram is not None and "<age>" not in histogram and histogram.count("<rect") == 2
    at = [datetime(2025, 3, 3, 10, minute, tzinfo=UTC) for minute in range(4)]
    drawn = charts.lines(
        "<psi>", [charts.Line("<age>", list(zip(at, [0.1, None, 0.3, 0.4], strict=True)))], threshold=0.2
    )
    assert "<psi>" not in drawn and "<age>" not in drawn and "&lt;age&gt;" in drawn
    assert drawn.count("<circle") == 3 and drawn.count("<polyline") == 1  # a gap: one dot alone, then a line
    assert drawn.count('class="threshold"') == 1 and "threshold 0.2" in drawn
    assert 'class="threshold"' not in charts.lines("none", [charts.Line("x", [])], threshold=float("inf"))
