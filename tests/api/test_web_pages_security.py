"""What every web page tells the browser to refuse (outside scripts, styles and images, framing, Referer to
other sites), and model cards that show no image from outside mlgate."""

from __future__ import annotations

import httpx

from mlgate.interfaces.web.views import card_html
from tests.support.project import Project


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
