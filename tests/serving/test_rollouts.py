"""Production rollouts against a real server: versions that pass gate B roll out to the `web` endpoint.

The tests run in order on one world (tests/support/rollout_world.py): version 1 is the endpoint's first
deployment; version 2 rolls out by canary under load; version 3, whose model raises on a negative age,
is rolled back during its canary while the load (every row with a negative age) sees no failure, since
the host answers from the stable slot; version 4, fast and faultless but answering unlike version 2 on
every row, is rolled back on its disagreement rate. Production versions are numbered as they arrive.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mlgate.adapters.sql.models import Notification
from tests.support.load import WrkResult, run_wrk
from tests.support.project import METRICS_TOKEN, bearer, stop_server
from tests.support.rollout_world import ENDPOINT, MIN_COMPARED, RolloutWorld, build
from tests.support.serving_world import FEATURES
from tests.support.worlds import Template

ENV = "production"
WAIT_S = 90.0
PACE_MS = 10  # per connection between two requests: a few hundred requests a second, plenty for each step


@pytest.fixture(scope="module")
def world(staged_template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutWorld]:
    built = build(staged_template, tmp_path_factory.mktemp("rollouts"))
    try:
        yield built
    finally:
        stop_server(built.server)


def _finished(world: RolloutWorld, version: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    with world.client("vic") as vic:
        while True:
            found = [r for r in vic.rollouts(ENV) if r["version"] == version]
            if found and found[0]["state"] in ("succeeded", "failed", "rolled-back"):
                return vic.rollout(ENV, found[0]["id"])
            assert time.monotonic() < deadline, found
            time.sleep(0.3)


def _champion(world: RolloutWorld) -> int | None:
    answer = httpx.get(
        f"{world.url}/mlflow/{ENV}/api/2.0/mlflow/registered-models/alias",
        params={"name": "diabetes", "alias": "champion"},
        headers=bearer(world.project.tokens["vic"]),
        timeout=30,
    )
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    return int(answer.json()["model_version"]["version"])


def _weights(world: RolloutWorld) -> dict[str, tuple[int, int]]:
    with world.client("vic") as vic:
        endpoint = vic.endpoint(ENV, ENDPOINT)
    return {s["slot"]: (s["version"], s["traffic"]) for s in endpoint["slots"]}


def _answered(host: str) -> float:
    """How many live requests to the endpoint the production host has answered, by its metrics."""
    text = httpx.get(f"{host}/metrics", headers=bearer(METRICS_TOKEN), timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlgate_serving_requests_total{")
        and f'endpoint="{ENDPOINT}"' in line
        and 'kind="live"' in line
    )


def _served(answer: dict[str, Any]) -> dict[str, tuple[int, int, list[str]]]:
    return {
        s["slot"]: (s["version"], s["weight"], s["approved_by"]) for s in answer["slots"] if s["endpoint"] == ENDPOINT
    }


class Load:
    """wrk against the production endpoint in a thread, paced, until `wait` (at most `seconds`)."""

    def __init__(self, world: RolloutWorld, *, age: int, seconds: int) -> None:
        with world.client("olu") as olu:
            key = olu.rotate_key(ENV, ENDPOINT, "secondary")["key"]
        host = world.host_url(ENV)
        url = f"{host}/endpoints/{ENDPOINT}/invocations"
        # Rows versions 1 and 2 answer alike (0): a canary of 2 over 1 agrees with its stable slot.
        body = {"dataframe_split": {"columns": FEATURES, "data": [[age, 0.3, -0.2, 1.1], [40, -1.0, -0.5, 0.0]]}}
        self.result: WrkResult | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(url, body, {"Authorization": f"Bearer {key}"}, seconds), daemon=True
        )
        before = _answered(host)
        self._thread.start()
        deadline = time.monotonic() + 30
        while _answered(host) <= before:  # under way before the version arrives: the host is answering it
            assert time.monotonic() < deadline, "the load never reached the host"
            time.sleep(0.1)

    def _run(self, url: str, body: dict[str, Any], headers: dict[str, str], seconds: int) -> None:
        self.result = run_wrk(
            url, body=body, headers=headers, seconds=seconds, connections=4, pace_ms=PACE_MS, until=self._done
        )

    def wait(self) -> WrkResult:
        """The load's figures, the load ended now (the rollout it accompanied is over)."""
        self._done.set()
        self._thread.join(timeout=120)
        assert self.result is not None, "wrk did not finish"
        return self.result


def test_the_first_version_through_gate_b_goes_to_blue_with_all_the_traffic(world: RolloutWorld) -> None:
    world.through_gate_b(world.staging[0])
    rollout = _finished(world, 1)
    assert rollout["state"] == "succeeded", rollout
    assert (rollout["from_slot"], rollout["to_slot"], rollout["previous_version"]) == (None, "blue", None)
    assert [s["traffic"] for s in rollout["steps"]] == [100]
    assert _weights(world) == {"blue": (1, 100)}
    assert _champion(world) == 1


def test_a_good_version_rolls_out_by_canary_under_load_without_a_failed_request(world: RolloutWorld) -> None:
    load = Load(world, age=45, seconds=60)
    world.through_gate_b(world.staging[1])
    rollout = _finished(world, 2)
    result = load.wait()
    assert rollout["state"] == "succeeded", rollout
    assert (rollout["from_slot"], rollout["to_slot"], rollout["previous_version"]) == ("blue", "green", 1)
    assert [(s["traffic"], s["outcome"]) for s in rollout["steps"]] == [(10, "passed"), (50, "passed"), (100, "passed")]
    assert all(s["requests"] >= 10 and s["errors"] == 0 and s["p95_ms"] is not None for s in rollout["steps"])
    # compared with blue on a shadowed share of the requests (blue shadows green at the 100% step): alike
    assert all(s["compared"] >= MIN_COMPARED and s["disagreement_rate"] == 0.0 for s in rollout["steps"])
    assert all(s["prediction_drift"] == pytest.approx(0.0) for s in rollout["steps"]), rollout["steps"]
    assert result.failed == 0 and result.requests > 100, result.raw
    assert result.by_header.get("green", 0) > 0 and result.by_header.get("blue", 0) > 0, result.by_header
    assert _weights(world) == {"blue": (1, 0), "green": (2, 100)}  # blue kept for `endpoints rollback`
    assert _champion(world) == 2

    shown = world.cli("rollouts", "show", str(rollout["id"]), "--env", ENV, user="vic")
    assert shown.returncode == 0, shown.stderr
    for text in ("succeeded", "blue -> green", "10%", "50%", "100%", "passed", "p95", "0.0% disagree"):
        assert text in shown.stdout, shown.stdout
    listed = world.cli("rollouts", "list", "--env", ENV, "--json", user="vic")
    assert listed.returncode == 0, listed.stderr
    assert [(r["version"], r["state"]) for r in json.loads(listed.stdout)] == [(2, "succeeded"), (1, "succeeded")]


def test_a_failing_canary_is_rolled_back_and_callers_never_see_its_failures(world: RolloutWorld) -> None:
    load = Load(world, age=-1, seconds=60)  # every request carries a negative age: version 3 fails them
    world.through_gate_b(world.staging[2])
    rollout = _finished(world, 3)
    result = load.wait()
    assert rollout["state"] == "rolled-back", rollout
    assert (rollout["from_slot"], rollout["to_slot"], rollout["previous_version"]) == ("green", "blue", 2)
    first = rollout["steps"][0]
    assert (first["traffic"], first["outcome"]) == (10, "breach") and first["errors"] > 0, rollout["steps"]
    assert "error rate" in rollout["reason"] and "max_error_rate 1.00%" in rollout["reason"], rollout["reason"]
    assert result.failed == 0 and result.requests > 100, result.raw
    assert set(result.by_header) == {"green"}, result.by_header  # the canary's answers all came from green
    assert _weights(world) == {"blue": (3, 0), "green": (2, 100)}
    assert _champion(world) == 2

    db = world.project.db()
    try:
        with db.read() as session:
            alerts = session.execute(select(Notification).where(Notification.event == "rollout.failed")).scalars()
            rows = [(n.recipient, n.channel, n.payload["rollout"]["id"]) for n in alerts]
    finally:
        db.dispose()
    assert ("olu", "inbox", rollout["id"]) in rows, rows

    # What served when, answered from the audit log alone: before the first rollout, after it, during the
    # second one's first canary step, after it, during the third one's breached step, and now.
    with world.client("vic") as vic:
        done = {r["version"]: vic.rollout(ENV, r["id"]) for r in vic.rollouts(ENV)}
    moments = {
        "before": done[1]["created_at"],
        "first": done[1]["finished_at"],
        "canary": done[2]["steps"][0]["ended_at"],
        "second": done[2]["finished_at"],
        "breach": done[3]["steps"][0]["ended_at"],
        "now": None,
    }
    with world.client("admin") as admin:
        answers = {name: _served(admin.audit_at(ENV, at)) for name, at in moments.items()}
    sam = ["sam"]
    assert answers == {
        "before": {},
        "first": {"blue": (1, 100, sam)},
        "canary": {"blue": (1, 90, sam), "green": (2, 10, sam)},
        "second": {"blue": (1, 0, sam), "green": (2, 100, sam)},
        "breach": {"blue": (3, 10, sam), "green": (2, 90, sam)},
        "now": {"blue": (3, 0, sam), "green": (2, 100, sam)},
    }
    refused = httpx.get(
        f"{world.url}/api/v1/audit/at",
        params={"env": ENV, "time": "yesterday"},
        headers=bearer(world.project.tokens["admin"]),
        timeout=30,
    )
    assert refused.status_code == 422 and "invalid time 'yesterday'" in refused.json()["error"]["message"]
    shown = world.cli("audit", "at", "--env", ENV, "--time", moments["canary"], user="admin")
    assert shown.returncode == 0, shown.stderr
    assert "green" in shown.stdout and "10%" in shown.stdout and "sam (gate B" in shown.stdout, shown.stdout
    malformed = world.cli("audit", "at", "--env", ENV, "--time", "yesterday", user="admin")
    assert malformed.returncode == 2 and "invalid time 'yesterday'" in malformed.stderr, malformed.stderr
    unknown = world.cli("audit", "at", "--env", "prod", user="admin")
    assert unknown.returncode == 2 and "unknown environment 'prod'" in unknown.stderr, unknown.stderr


def test_a_canary_that_answers_fast_but_unlike_the_stable_slot_is_rolled_back(world: RolloutWorld) -> None:
    load = Load(world, age=45, seconds=60)
    world.through_gate_b(world.staging[3])  # answers 1 where version 2, serving on green, answers 0
    rollout = _finished(world, 4)
    result = load.wait()
    assert rollout["state"] == "rolled-back", rollout
    assert (rollout["from_slot"], rollout["to_slot"], rollout["previous_version"]) == ("green", "blue", 2)
    first = rollout["steps"][0]
    assert (first["traffic"], first["outcome"], first["errors"]) == (10, "breach", 0), rollout["steps"]
    assert first["compared"] >= MIN_COMPARED and first["disagreement_rate"] == 1.0, first
    assert first["prediction_drift"] > 1, first  # all 0 on green, all 1 on blue
    reason = rollout["reason"]
    assert "disagreement rate 100.00%" in reason and "max_disagreement 20.00%" in reason, reason
    assert result.failed == 0, result.raw
    assert _weights(world) == {"blue": (4, 0), "green": (2, 100)}
    assert _champion(world) == 2

    shown = world.cli("rollouts", "show", str(rollout["id"]), "--env", ENV, user="vic")
    assert shown.returncode == 0, shown.stderr
    for text in ("rolled-back", "disagreement rate 100.00%", "100.0% disagree", "breach"):
        assert text in shown.stdout, shown.stdout
    db = world.project.db()
    try:
        with db.read() as session:
            alerts = session.execute(select(Notification).where(Notification.event == "rollout.failed")).scalars()
            sent = [n.payload for n in alerts if n.payload["rollout"]["id"] == rollout["id"]]
    finally:
        db.dispose()
    assert sent and all("disagreement rate 100.00%" in p["text"] for p in sent), sent
    assert sent[0]["rollout"]["last_step"]["disagreement_rate"] == 1.0, sent[0]
