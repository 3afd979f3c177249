"""The web UI's world: a copy of the staged template (serving_world: two `diabetes` versions in staging, an
endpoint there) with both versions deployed side by side on the staging endpoint; both passed through
gate B into production, where olu serves them side by side on the endpoint `web` (blue 100%, green 0%);
and two more versions registered in dev by dana, so two gate A requests wait for lee. And what browser
tests share: a headless Chromium (`chromium`) with screenshots, and a signed-in session outside the
browser (`signed_in`)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.serving_world import SCRIPT, Served, from_template, log_runs, stopped_on_failure, through_gate_b
from tests.support.worlds import Template

ENDPOINT = "diabetes"
PRODUCTION_ENDPOINT = "web"
LOOP = "for c in (1.0, 1e-6):"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30.0
WINDOW = (1366, 900)  # a laptop screen

NO_BROWSER = "needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): make system-deps"


@dataclass
class WebWorld:
    served: Served
    requests: list[int]  # open gate A requests, oldest first

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def tokens(self) -> dict[str, str]:
        return self.served.project.tokens


def build_web(staged: Template, root: Path) -> WebWorld:
    """From a copy of the staged template; the caller stops the server (`stop_server(world.served.server)`)."""
    served: Served = from_template(staged, root)
    assert LOOP in SCRIPT
    more = SCRIPT.replace(LOOP, "for c in (0.3, 0.05):")
    with stopped_on_failure(served.server), ThreadPoolExecutor(1) as pool:
        # dana's script logs its two runs while olu deploys (independent; registering them waits)
        runs = pool.submit(log_runs, served.url, served.project.tokens["dana"], more, root, name="log_more.py")
        with served.client("olu") as olu:
            olu.deploy("staging", ENDPOINT, model="diabetes", version=1, slot="blue", traffic=100)
            olu.deploy("staging", ENDPOINT, model="diabetes", version=2, slot="green", traffic=0)
        _into_production(served)
        with served.client("dana") as dana:
            opened = [
                int(dana.register_model("dev", name="diabetes", run_id=run)["request_id"]) for run in runs.result()
            ]
    return WebWorld(served=served, requests=opened)


def _into_production(served: Served) -> None:
    """Both staging versions through gate B; olu serves them side by side on production's `web`."""
    promotions = [through_gate_b(served.project, version) for version in (1, 2)]
    deadline = time.monotonic() + 120
    with served.client("admin") as admin:
        for request_id in promotions:
            while (request := admin.promotion_request(request_id, env="production"))["state"] != "promoted":
                assert request["state"] != "failed" and time.monotonic() < deadline, request
                time.sleep(0.3)
    with served.client("olu") as olu:
        olu.create_endpoint("production", PRODUCTION_ENDPOINT, description="the clinic's web app")
        olu.deploy("production", PRODUCTION_ENDPOINT, model="diabetes", version=1, slot="blue", traffic=100)
        olu.deploy("production", PRODUCTION_ENDPOINT, model="diabetes", version=2, slot="green", traffic=0)


# --- the browser ------------------------------------------------------------------------------------


class Browser:
    """One headless Chromium; `page` opens a path, `shot` keeps a screenshot of what it shows."""

    def __init__(self, driver: Any, base: str, shots: Path) -> None:
        self.driver = driver
        self.base = base
        self.shots = shots

    def page(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return url.removeprefix(self.base)

    def text(self, css: str) -> str:
        text: str = self.find(css).text
        return text

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT_S).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def body(self) -> str:
        return self.text("body")

    def showing(self, text: str, *, exact: bool = False) -> Any:
        """The first element shown whose own text contains `text` (is it, with `exact`), once there is one:
        for pages drawn by their own JavaScript (MLflow's UI), whose markup has no stable ids."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        assert "'" not in text, text  # written into the XPath as a literal
        test = f"normalize-space(.) = '{text}'" if exact else f"contains(., '{text}')"
        xpath = f"//body//*[text()[{test}]]"

        def shown(driver: Any) -> Any:
            return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), False)

        redrawn = (StaleElementReferenceException,)  # the page redrew the element between finding and asking
        return WebDriverWait(self.driver, WAIT_S, ignored_exceptions=redrawn).until(shown, f"nothing shows {text!r}")

    def shot(self, name: str) -> None:
        """The whole page, not just the window: the window grows to the page's height for the picture."""
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        self.driver.set_window_size(WINDOW[0], max(WINDOW[1], min(height, 6000)))
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.driver.set_window_size(*WINDOW)

    def sign_in(self, token: str, *, then: str = "/") -> None:
        self.driver.delete_all_cookies()
        self.page(f"/signin?next={then}")
        field = self.find("#token")
        field.send_keys(token)
        self.find("#signin-button").click()
        self.find("#signed-in-as")

    def sign_out(self) -> None:
        self.find("form.signout button").click()
        self.find("#token")


@contextmanager
def screenshots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, name: str) -> Iterator[Path]:
    """A folder for a module's screenshots, named in the test output once the module is done."""
    folder = tmp_path_factory.mktemp(name)
    yield folder
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        print(f"\n{name}: {folder}")


@contextmanager
def chromium(base: str, shots: Path, profile: Path) -> Iterator[Browser]:
    """A headless Chromium on `base` (skips the test without Debian's chromium); screenshots go to `shots`."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver, base, shots)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def signed_in(base: str, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """A signed-in session outside the browser: the client holds the cookie; also the session's CSRF token."""
    with httpx.Client(base_url=base, timeout=30) as client:
        csrf = csrf_of(client.get("/signin").text)
        signed = client.post("/signin", data={"csrf": csrf, "token": token, "next": "/"})
        assert signed.status_code == 303, signed.text
        yield client, csrf_of(client.get("/").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)
