"""The web UI's monitoring pages in a real browser (headless Chromium) against a live `mlgate server`.

The world is tests/test_monitors.py's: production's endpoint `web` serves `diabetes:1` with its baseline
profile, watched by the monitor `web-watch` that the server's mlgate.yaml declares. Traffic is written
with the serving host's own writer; ground truth for part of it is sent through the API; the monitor is
run through the API: twice over the training population (clean), twice after it shifts (the second
breaching window fires the alert). Screenshots are kept under the pytest tmp folder, named in the output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from mlgate.interfaces.sdk.client import Client
from tests.api.test_monitors import CONFIG, ENV, FEATURES, K, World, _serve_a_profiled_version, patients, predict
from tests.support.project import Project, start_server, stop_server
from tests.support.web_world import Browser, chromium, screenshots, signed_in

MONITOR = "web-watch"
PAGE = f"/monitoring/{ENV}/{MONITOR}"
LABELLED = 400


def _results(world: World) -> None:
    """Clean windows with ground truth, then drifted ones until the alert fires."""
    world.score(patients(1600, seed=3), requests=40, seed=3)
    labelled = patients(LABELLED, seed=5)
    ids = world.score(labelled, requests=LABELLED, seed=5)
    truth = predict(labelled)
    truth[: LABELLED // 10] = 1 - truth[: LABELLED // 10]  # one answer in ten was wrong
    with world.client("olu") as olu:
        assert olu.send_feedback(ENV, "web", ids, truth.tolist())["accepted"] == LABELLED
        for _ in range(K):
            assert olu.run_monitor(ENV, MONITOR)["result"]["verdict"] == "clean"
        world.score(patients(8000, seed=4, drift=True), requests=80, seed=4)
        outcomes = [olu.run_monitor(ENV, MONITOR) for _ in range(K)]
    assert outcomes[-1]["change"] == "fire", outcomes[-1]


@pytest.fixture(scope="module")
def world(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("web-monitoring") / "project"
    project = project_template.copy(folder, config=CONFIG)
    server = start_server(project)
    built = World(project, server)
    try:
        _serve_a_profiled_version(built)
        _results(built)
        yield built
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def browser(
    world: World, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    with (
        screenshots(tmp_path_factory, request, "web-monitoring-screenshots") as shots,
        chromium(world.server.url, shots, tmp_path_factory.mktemp("chromium-profile")) as opened,
    ):
        yield opened


def _shown(world: World) -> dict[str, Any]:
    with Client(world.server.url, world.project.tokens["vic"]) as vic:
        return vic.monitor(ENV, MONITOR) | {"results": vic.monitor_results(ENV, MONITOR)}


def _dots(browser: Browser, css: str) -> int:
    return len(browser.find(css).find_elements("css selector", "circle"))


# ---------------------------------------------------------------------------------------------------


def test_olu_follows_the_firing_alert_to_the_monitor_and_runs_it(browser: Browser, world: World) -> None:
    shown = _shown(world)
    (alert,) = shown["alerts"]
    browser.sign_in(world.project.tokens["olu"])
    firing = browser.find(".firing-alerts")
    assert MONITOR in firing.text and "data-drift drift_share" in firing.text  # the overview says why
    browser.shot("01-overview-firing")

    browser.page("/monitoring")
    row = browser.find(f'table[data-env="{ENV}"] tr[data-monitor="{MONITOR}"]')
    assert "breach" in row.find_element("css selector", "td.verdict").text
    assert "firing since" in row.find_element("css selector", "td.firing").text
    assert "data-drift, prediction-drift" in row.text and "1d" in row.text  # signals, schedule
    browser.shot("02-monitoring")
    row.find_element("css selector", "a.monitor-link").click()
    browser.find("#monitor-facts")
    assert browser.path == PAGE

    # One chart per feature (its measure against its threshold), a dot per window that measured it.
    drift = [r["values"].get("data-drift") or {} for r in shown["results"]]
    measured = {
        feature: [d for d in drift if (d.get("features") or {}).get(feature, {}).get("value") is not None]
        for feature in FEATURES
    }
    for feature in FEATURES:
        chart = browser.find(f'[data-signal="data-drift"] figure[data-feature="{feature}"] svg')
        assert chart.get_attribute("aria-label").startswith(f"{feature}: ")
        assert chart.find_elements("css selector", "line.threshold")
        assert len(measured[feature]) >= 2 * K
        assert _dots(browser, f'figure[data-feature="{feature}"] svg') == len(measured[feature])
    shares = [d for d in drift if d.get("share") is not None]
    assert _dots(browser, '[data-signal="data-drift"] figure[data-metric="drift_share"]') == len(shares)
    performance = [r["values"].get("model-performance") or {} for r in shown["results"]]
    labelled = [p for p in performance if p.get("accuracy") is not None]
    assert len(labelled) >= 2 * K
    assert _dots(browser, 'figure[data-metric="accuracy"]') == len(labelled)
    for metric in ("p95_ms", "error_rate"):
        assert browser.find(f'[data-signal="endpoint-performance"] figure[data-metric="{metric}"] line.threshold')

    # The latest window's drift table is the API's, and the alert history names the alert.
    features = shown["last"]["values"]["data-drift"]["features"]
    for feature in FEATURES:
        cells = browser.find(f'#drift-table tr[data-feature="{feature}"]')
        assert cells.find_element("css selector", "td:nth-child(3)").text == features[feature]["measure"]
        assert ("drifted" in (cells.get_attribute("class") or "")) == bool(features[feature]["drifted"])
    assert "dataset drift" in browser.text("#drift-summary")
    history = browser.text(f'#alert-history tr[data-alert="{alert["id"]}"]')
    assert "firing" in history and "data-drift drift_share" in history
    browser.shot("03-monitor")

    browser.find("#run-button").click()
    flash = browser.text("#flash")
    assert re.fullmatch(rf"Ran {MONITOR}: breach over \d+ rows\.", flash), flash
    assert len(_shown(world)["results"]) == len(shown["results"]) + 1
    assert _dots(browser, 'figure[data-feature="glucose"] svg') == len(measured["glucose"]) + 1
    browser.shot("04-monitor-run-now")


def test_a_viewer_cannot_run_it_and_a_stranger_cannot_see_it(browser: Browser, world: World) -> None:
    before = len(_shown(world)["results"])
    browser.sign_in(world.project.tokens["vic"], then=PAGE)
    assert browser.text("h1").startswith(MONITOR)
    assert browser.find('figure[data-feature="glucose"] svg')
    assert not browser.driver.find_elements("css selector", "#run-form")
    browser.shot("05-monitor-viewer")
    with signed_in(world.server.url, world.project.tokens["vic"]) as (client, csrf):
        refused = client.post(f"{PAGE}/run", data={"csrf": csrf})
        assert refused.status_code == 403
        assert "&#39;manage-monitors&#39; in &#39;production&#39; needs one of the roles: operator" in refused.text
    assert len(_shown(world)["results"]) == before

    # dana has no role in production: neither the page nor the list shows the monitor.
    browser.sign_in(world.project.tokens["dana"], then=PAGE)
    assert "'read' in 'production' needs a role bound to 'production'" in browser.text("#error-message")
    browser.shot("06-monitor-refused")
    browser.page("/monitoring")
    browser.find("h1")
    assert MONITOR not in browser.body()
    with signed_in(world.server.url, world.project.tokens["dana"]) as (client, csrf):
        assert client.get(PAGE).status_code == 403
        assert client.post(f"{PAGE}/run", data={"csrf": csrf}).status_code == 403
