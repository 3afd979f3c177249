"""Prometheus: the control plane's `/metrics` and a serving host's, scraped for real from a running server
and the host it pushed a deployment to, and the shipped rules and dashboard checked against what they
export.

The world is a copy of the staged template: the server's own promotion worker carried two versions
through gate A, so those requests, their durations and their notifications are real. Its policy adds a
monitor on the staging endpoint; staging's version 1 gets a baseline profile (as registration with data
would leave it), is deployed and scored through the serving host, and the monitor evaluates that
traffic: its p95 threshold is below any real latency and one window fires, so the alert is real too.
What the world cannot make cheaply is written into the control database as the services leave it, with
times the assertions check: a finished training job (42 s), a failed rollout (90 s), a gate B request
that failed after its approval (decided an hour after it opened) and an email waiting ten minutes for a
retry.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlgate.adapters.monitoring.store import read_requests
from mlgate.adapters.sql.models import Job, Notification, PromotionRequest, Rollout, utcnow
from mlgate.adapters.sql.queries import model_version
from mlgate.domain.profile import build_profile
from mlgate.services.registration import models
from tests.support.project import METRICS_TOKEN, bearer, stop_server
from tests.support.serving_world import FEATURES, STAGED_POLICY, Served, from_template, rows, score
from tests.support.worlds import Template

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "rules_test.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mlgate.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool (make system-deps installs it)")

ENV, ENDPOINT, MONITOR = "staging", "diabetes", "diabetes-watch"
MONITOR_POLICY = f"""
monitors:
  - name: {MONITOR}
    environment: {ENV}
    endpoint: {ENDPOINT}
    signals: [data-drift, endpoint-performance]
    thresholds: {{max_p95_ms: 0.001}}
    window: 1h
    schedule: '0 0 31 2 *'
    min_rows: 1
    consecutive: 1
"""
# The monitor runs when the fixture asks: its schedule (February 31st) is never due, so no scheduled run
# overlaps the one asked for.
SCORED_REQUESTS = 12
# Every label the control plane's families carry (python_info's own aside): names and states, never ids.
CONTROL_LABELS = {"environment", "monitor", "endpoint", "signal", "metric", "feature", "verdict", "channel"}
CONTROL_LABELS |= {"state", "gate", "decision", "kind", "le", "version"}
PLATFORM_LABELS = {"implementation", "major", "minor", "patchlevel", "version"}
NAME = re.compile(r"\bmlgate[_:][a-zA-Z0-9_:]*")


@dataclass
class Scraped:
    world: Served
    control: str  # the control plane's /metrics
    host: str  # the staging serving host's /metrics
    host_url: str


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"no {name}{labels}; the {name} samples: {[k for k in found if k[0] == name]}"
    return found[key]


def _profile_version_1(world: Served) -> None:
    """Staging's version 1 with a baseline profile and reference sample, as registration with data leaves it."""
    rng = np.random.default_rng(0)
    training = np.column_stack([rng.integers(20, 80, 2000).astype(float), *rng.normal(size=(3, 2000))])
    predictions = (training[:, 2] > 0).astype(np.float64)
    profile = build_profile(
        data="diabetes-train@1",
        rows=len(training),
        features={name: training[:, i] for i, name in enumerate(FEATURES)},
        label=None,
        predictions={"prediction": predictions},
        sample={"file": "sample.csv", "rows": len(training), "seed": 0, "sha256": ""},
        notes=[],
    )
    folder = models.version_dir(world.project.settings, ENV, "diabetes", 1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.json").write_text(json.dumps(profile))
    with (folder / "sample.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([*FEATURES, "prediction"])
        writer.writerows([*x, p] for x, p in zip(training.tolist(), predictions.tolist(), strict=True))


def _write_rows(world: Served) -> None:
    """The rows the world cannot make cheaply, as the services leave them (see the module's docstring)."""
    now = utcnow()
    db = world.project.db()
    try:
        with db.write() as session:
            v1 = model_version(session, environment=ENV, name="diabetes", version=1)
            v2 = model_version(session, environment=ENV, name="diabetes", version=2)
            assert v1 is not None and v2 is not None
            session.add(
                Job(
                    environment="dev",
                    kind="train",
                    state="succeeded",
                    command="python train.py",
                    spec={},
                    requested_by="dana",
                    created_at=now - timedelta(minutes=3),
                    started_at=now - timedelta(minutes=2),
                    finished_at=now - timedelta(minutes=2) + timedelta(seconds=42),
                    timeout_s=3600,
                    exit_code=0,
                    backend="local",
                )
            )
            session.add(
                Rollout(
                    environment=ENV,
                    endpoint=ENDPOINT,
                    model="diabetes",
                    version=2,
                    model_version_id=v2.id,
                    strategy="canary",
                    state="failed",
                    reason="the new slot answered 5xx over its SLO",
                    created_at=now - timedelta(minutes=10),
                    updated_at=now - timedelta(minutes=10) + timedelta(seconds=90),
                    finished_at=now - timedelta(minutes=10) + timedelta(seconds=90),
                )
            )
            session.add(
                PromotionRequest(
                    gate="B",
                    model_version_id=v1.id,
                    model_name="diabetes",
                    source_env=ENV,
                    source_version=1,
                    target_env="production",
                    state="failed",
                    requested_by="lee",
                    author="dana",
                    required_approvals=1,
                    approver_role="software-developer",
                    required_checks=[],
                    evidence={},
                    created_at=now - timedelta(hours=2),
                    decided_at=now - timedelta(hours=1),
                    failure="copying into production failed",
                )
            )
            session.add(
                Notification(
                    delivery_id=str(uuid.uuid4()),
                    event="request.opened",
                    channel="email",
                    recipient="sam@example.com",
                    payload={},
                    state="pending",
                    attempts=3,
                    next_attempt_at=now + timedelta(hours=1),  # waiting for its next retry
                    last_error="connection refused",
                    created_at=now - timedelta(minutes=10),
                )
            )
    finally:
        db.dispose()


def _serve_and_score(world: Served) -> str:
    """Version 1 deployed on the staging endpoint and scored; the host's URL once its rows are recorded."""
    with world.client("olu") as olu:
        key = str(olu.rotate_key(ENV, ENDPOINT, "primary")["key"])
        shown = olu.deploy(ENV, ENDPOINT, model="diabetes", version=1, slot="blue")
        assert shown["ready"], shown
    host = world.host_url(ENV)
    for i in range(SCORED_REQUESTS):
        answer = score(host, key, rows(5, seed=i))
        assert answer.status_code == 200, answer.text
    monitoring = world.project.settings.environment(ENV).monitoring_dir
    deadline = time.monotonic() + 15
    while read_requests(monitoring, ENDPOINT).num_rows < SCORED_REQUESTS * 5:  # flushed each second
        assert time.monotonic() < deadline, "the host did not record its requests"
        time.sleep(0.3)
    return host


@pytest.fixture(scope="module")
def scraped(staged_template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    world: Served = from_template(
        staged_template, tmp_path_factory.mktemp("prometheus"), policy=STAGED_POLICY + MONITOR_POLICY
    )
    try:
        _profile_version_1(world)
        host = _serve_and_score(world)
        with world.client("olu") as olu:
            ran = olu.run_monitor(ENV, MONITOR)
        assert ran["result"]["verdict"] == "breach", ran["result"]
        _write_rows(world)
        control = httpx.get(f"{world.url}/metrics", headers=bearer(METRICS_TOKEN), timeout=30)
        served = httpx.get(f"{host}/metrics", headers=bearer(METRICS_TOKEN), timeout=30)
        assert control.status_code == 200 and served.status_code == 200, (control.text, served.text)
        assert control.headers["content-type"].startswith("text/plain; version=0.0.4")
        yield Scraped(world, control.text, served.text, host)
    finally:
        stop_server(world.server)


def test_both_metrics_answer_only_the_metrics_token(scraped: Scraped) -> None:
    world = scraped.world
    admin = world.project.tokens["admin"]
    for url in (f"{world.url}/metrics", f"{scraped.host_url}/metrics"):
        for headers in (
            {},
            bearer("not-the-metrics-token-0123456789"),
            bearer(admin),  # an mlgate token, even the admin's, is not the metrics token
            bearer(METRICS_TOKEN + "x"),
            {"Authorization": f"Token {METRICS_TOKEN}"},
        ):
            refused = httpx.get(url, headers=headers, timeout=30)
            assert refused.status_code == 401, (url, headers, refused.text)
            assert "mlgate_" not in refused.text and "token" in refused.text
    refused = httpx.get(f"{world.url}/metrics", timeout=30)
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "unauthenticated"
    # The SHA-256 the server keeps is not a credential either.
    hashed = httpx.get(f"{world.url}/metrics", headers=bearer(_sha256(METRICS_TOKEN)), timeout=30)
    assert hashed.status_code == 401
    basic = httpx.get(f"{world.url}/metrics", auth=("prometheus", METRICS_TOKEN), timeout=30)
    assert basic.status_code == 200 and "mlgate_build_info" in basic.text
    # Not an API route: no OpenAPI entry; and the token never reaches the server's log.
    assert "/metrics" not in json.dumps(httpx.get(f"{world.url}/api/v1/openapi.json", timeout=30).json()["paths"])
    assert METRICS_TOKEN not in (world.project.path / "server.log").read_text()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_control_plane_scrape_holds_the_databases_figures(scraped: Scraped) -> None:
    found = samples(scraped.control)
    # Gate A: two real promotions, each decided (approved) and copied; gate B: the one that failed.
    assert value(found, "mlgate_promotion_requests", gate="A", state="promoted") == len(scraped.world.promoted) == 2
    assert value(found, "mlgate_promotion_requests", gate="B", state="failed") == 1
    assert value(found, "mlgate_promotion_requests", gate="B", state="open") == 0  # every state, before its first
    decisions = "mlgate_promotion_request_decision_seconds"
    assert value(found, f"{decisions}_count", gate="A", decision="approved") == 2
    assert value(found, f"{decisions}_bucket", gate="B", decision="approved", le="1800") == 0
    assert value(found, f"{decisions}_bucket", gate="B", decision="approved", le="3600") == 1
    assert value(found, f"{decisions}_sum", gate="B", decision="approved") == pytest.approx(3600, abs=1)
    copies = value(found, "mlgate_promotion_duration_seconds_sum", gate="A")
    assert value(found, "mlgate_promotion_duration_seconds_count", gate="A") == 2 and 0 < copies < 120
    # The job and the rollout, with their durations in the right buckets.
    job = {"environment": "dev", "kind": "train", "state": "succeeded"}
    assert value(found, "mlgate_jobs", **job) == 1 and value(found, "mlgate_jobs", **{**job, "state": "failed"}) == 0
    assert value(found, "mlgate_job_duration_seconds_bucket", **job, le="30") == 0
    assert value(found, "mlgate_job_duration_seconds_bucket", **job, le="60") == 1
    assert value(found, "mlgate_job_duration_seconds_sum", **job) == pytest.approx(42, abs=0.01)
    rollout = {"environment": ENV, "endpoint": ENDPOINT, "state": "failed"}
    assert value(found, "mlgate_rollouts", **rollout) == 1
    assert value(found, "mlgate_rollout_duration_seconds_bucket", **rollout, le="60") == 0
    assert value(found, "mlgate_rollout_duration_seconds_bucket", **rollout, le="120") == 1
    # The outbox: the real inbox messages (sent), the email waiting for its retry.
    assert value(found, "mlgate_notifications", channel="inbox", state="sent") >= 4
    assert value(found, "mlgate_notifications", channel="email", state="pending") >= 1
    assert 600 <= value(found, "mlgate_notification_oldest_pending_age_seconds", channel="email") < 1800
    # The monitor: firing on the p95 of the traffic it evaluated, with per-feature drift values.
    monitor = {"environment": ENV, "monitor": MONITOR}
    assert value(found, "mlgate_monitor_alert_firing", **monitor, endpoint=ENDPOINT) == 1
    assert value(found, "mlgate_monitor_alerts_total", **monitor) == 1
    assert value(found, "mlgate_monitor_verdict", **monitor, verdict="breach") == 1
    assert value(found, "mlgate_monitor_verdict", **monitor, verdict="clean") == 0
    assert time.time() - value(found, "mlgate_monitor_last_run_timestamp_seconds", **monitor) < 600
    signal = "mlgate_monitor_signal_value"
    assert value(found, signal, **monitor, signal="endpoint-performance", metric="p95_ms", feature="") > 0.001
    assert value(found, signal, **monitor, signal="endpoint-performance", metric="requests", feature="") == 12
    for feature in FEATURES:
        measure = value(found, signal, **monitor, signal="data-drift", metric="value", feature=feature)
        assert measure >= 0
        assert value(found, signal, **monitor, signal="data-drift", metric="drifted", feature=feature) in (0, 1)


def test_no_series_is_labelled_by_an_id_a_digest_or_a_person(scraped: Scraped) -> None:
    people = set(scraped.world.project.tokens)
    digests = set(scraped.world.digests.values())
    for (name, labels), _ in samples(scraped.control).items():
        names = {label for label, _ in labels}
        allowed = PLATFORM_LABELS if name == "python_info" else CONTROL_LABELS
        assert names <= allowed, (name, names - allowed)
        for label, text in labels:
            an_id = re.fullmatch(r"[0-9a-f]{32,}|\d+", text) and label != "le" and name != "python_info"
            assert text not in people and text not in digests and not an_id, (name, labels)
    for (name, labels), _ in samples(scraped.host).items():
        assert {label for label, _ in labels} <= {"endpoint", "slot", "kind", "status", "le", "outcome"}, name
    assert not any(digest in scraped.host for digest in digests)


def test_the_hosts_latency_is_per_slot_up_to_30_seconds(scraped: Scraped) -> None:
    found = samples(scraped.host)
    latency = "mlgate_serving_request_duration_seconds"
    assert value(found, f"{latency}_count", endpoint=ENDPOINT, slot="blue") == SCORED_REQUESTS
    assert value(found, f"{latency}_bucket", endpoint=ENDPOINT, slot="blue", le="30") == SCORED_REQUESTS
    live = {"endpoint": ENDPOINT, "slot": "blue", "kind": "live", "status": "200"}
    assert value(found, "mlgate_serving_requests_total", **live) == SCORED_REQUESTS
    assert value(found, "mlgate_serving_model_load_duration_seconds_count") >= 1


@needs_promtool
def test_promtool_accepts_a_real_scrape_of_both(scraped: Scraped) -> None:
    assert PROMTOOL is not None
    for name, text in (("control plane", scraped.control), ("serving host", scraped.host)):
        checked = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"


@needs_promtool
def test_promtool_accepts_the_rules_their_tests_and_the_scrape_config() -> None:
    assert PROMTOOL is not None
    for command in (
        ["check", "rules", str(RULES)],
        ["test", "rules", str(RULES_TESTS)],
        ["check", "config", "--syntax-only", str(SCRAPE_CONFIG)],
    ):
        checked = subprocess.run([PROMTOOL, *command], capture_output=True, text=True, timeout=60, check=False)
        assert checked.returncode == 0, f"promtool {' '.join(command)}: {checked.stdout}{checked.stderr}"


def _exported(*texts: str) -> set[str]:
    """Every name a query may use: each family's, and its samples' (`_bucket`, `_count`, `_sum`, `_total`)."""
    names = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
    return names


def _queries(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("expr", "query", "definition") and isinstance(item, str):
                yield item
            else:
                yield from _queries(item)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def test_the_dashboard_and_the_rules_query_only_what_is_exported(scraped: Scraped) -> None:
    exported = _exported(scraped.control, scraped.host)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 20 and all(p["targets"] for p in panels)
    on_dashboard = {name for query in _queries(dashboard) for name in NAME.findall(query)}
    in_rules = {name for rule in rules for name in NAME.findall(rule["expr"])}
    assert on_dashboard - exported - recorded == set(), "the dashboard queries what nobody exports"
    assert in_rules - exported - recorded == set(), "the rules query what nobody exports"
    # And the other way: every mlgate family either side exports is on the dashboard or in a rule.
    families = {f.name for text in (scraped.control, scraped.host) for f in text_string_to_metric_families(text)}
    used = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in on_dashboard | in_rules}
    unused = {f for f in families if f.startswith("mlgate_") and f not in used and f != "mlgate_build_info"}
    assert unused == set(), f"exported but neither on the dashboard nor in a rule: {sorted(unused)}"
