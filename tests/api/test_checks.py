"""Checks in staging and gate B, from outside: a live server, the CLI, the SDK.

Versions arriving in staging get their gate B request opened by the staging pipeline (requested by
gate A's requester) and their checks run and recorded; approval stays refused until every required
check has passed; `mlgate check` runs them again by hand and a newer record replaces the older.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlgate.interfaces.sdk.client import ApiError
from tests.support.checks_world import ChecksWorld, build
from tests.support.project import Project, stop_server

FINAL = ("passed", "failed", "error")


@pytest.fixture(scope="module")
def world(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChecksWorld]:
    built = build(project_template, tmp_path_factory.mktemp("checks"))
    yield built
    stop_server(built.server)


def _gate_b(world: ChecksWorld, model: str, version: int) -> dict[str, Any]:
    """The gate B request of a staging version once every required check has a final record."""
    deadline = time.monotonic() + 240
    with world.client("sam") as sam:
        while True:
            found = [
                r
                for r in sam.requests("staging")
                if r["source_env"] == "staging" and r["model_name"] == model and r["source_version"] == version
            ]
            if found:
                request = sam.promotion_request(found[0]["id"])
                checks = request["evidence"].get("checks") or {}
                if all(checks.get(n, {}).get("status") in FINAL for n in request["required_checks"]):
                    return request
            assert time.monotonic() < deadline, found
            time.sleep(1)


def test_gate_b_opens_by_itself_for_gate_a_requester_and_model_without_snapshot_fails_code_checks(
    world: ChecksWorld,
) -> None:
    request = _gate_b(world, "risk", 1)
    assert request["state"] == "open"
    assert request["requested_by"] == "dana"  # gate A's requester, not `system`
    checks = request["evidence"]["checks"]
    assert checks["lint"]["status"] == "failed"
    assert "no code snapshot" in checks["lint"]["summary"]
    assert checks["unit-tests"]["status"] == "failed"
    assert checks["model-validation"]["status"] == "passed", checks["model-validation"]
    assert "in the sandbox" in checks["model-validation"]["log_excerpt"]
    assert checks["endpoint-tests"]["status"] == "passed", checks["endpoint-tests"]
    assert "same answers" in checks["endpoint-tests"]["log_excerpt"]
    with world.client("sam") as sam, pytest.raises(ApiError) as refused:
        sam.decide(request["id"], approve=True)
    assert refused.value.status_code == 409
    assert "lint (failed)" in refused.value.message
    # The requester heard about it without waiting for an approver.
    with world.client("dana") as dana:
        inbox = dana.request("GET", "/api/v1/inbox")["data"]
    assert any(n["event"] == "request.checks-failed" and n["request_id"] == request["id"] for n in inbox)


def test_shuffled_labels_fail_model_validation(world: ChecksWorld) -> None:
    request = _gate_b(world, "risk", 2)
    validation = request["evidence"]["checks"]["model-validation"]
    assert validation["status"] == "failed", validation
    assert "below the bar 0.85" in validation["summary"]


def test_a_model_that_forges_its_own_verdict_fails_model_validation_on_its_real_metric(world: ChecksWorld) -> None:
    request = _gate_b(world, "forger", 1)
    validation = request["evidence"]["checks"]["model-validation"]
    assert validation["status"] == "failed", validation
    assert "below the bar 0.85" in validation["summary"] and "forged" not in validation["log_excerpt"]
    assert validation["job_id"] is None  # judged by the server; the model only scored the features
    (evidence,) = [a for a in validation["artifacts"] if a["name"] == "validation.json"]
    figures = json.loads(Path(evidence["path"]).read_text())
    assert figures["status"] == "failed" and figures["scored_in"] == "sandbox" and figures["label"] == "outcome"
    assert 0.35 < figures["value"] < 0.65 and figures["rows"] == 300  # noise scores about 0.5
    # The verdict files it wrote went only where a sandbox let it write: its scoring folder (gone), and
    # the staging serving host's own state folder (the endpoint tests served it), which no check reads.
    home = world.project.settings.home
    state = world.project.settings.env_dir("staging") / "serving" / "state"
    forged = [p for p in home.rglob("*.json") if p.name in ("result.json", "verdict.json")]
    assert [p for p in forged if state not in p.parents] == []


def test_snapshot_checks_run_the_models_own_code_and_block_gate_b(world: ChecksWorld) -> None:
    request = _gate_b(world, "diabetes", 1)
    checks = request["evidence"]["checks"]
    lint, tests = checks["lint"], checks["unit-tests"]
    assert lint["status"] == "failed" and lint["job_id"], lint
    # The snapshot's ruff.toml ignores every rule; the policy's configuration is the one that counts.
    assert "F401" in lint["log_excerpt"] and "os" in lint["log_excerpt"]
    assert "--isolated" in lint["summary"] and "configuration: the policy's" in lint["summary"]
    assert tests["status"] == "failed", tests
    assert "1 failed" in tests["summary"] and "test_fails_on_purpose" in tests["log_excerpt"]
    assert "verdict source: the author's tests" in tests["summary"]
    junit = [a for a in tests["artifacts"] if a["name"] == "junit.xml"]
    assert junit and "test_fails_on_purpose" in Path(junit[0]["path"]).read_text()
    shown = world.cli("requests", "show", str(request["id"]), user="sam")
    assert shown.returncode == 0, shown.stderr
    assert "lint" in shown.stdout and "failed" in shown.stdout and "ruff check" in shown.stdout
    # The job that ran lint is a job like any other: its log is there.
    logs = world.cli("jobs", "logs", str(lint["job_id"]), "--env", "staging", user="sam")
    assert "F401" in logs.stdout, logs.stdout + logs.stderr


def test_mlgate_check_reruns_by_hand_and_the_newer_record_counts(world: ChecksWorld) -> None:
    _gate_b(world, "risk", 1)
    done = world.cli("check", "risk:1", "--env", "staging", "--only", "lint", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    records = json.loads(done.stdout)
    assert [(r["name"], r["status"]) for r in records] == [("lint", "failed")]
    table = world.cli("check", "risk:1", "--env", "staging", "--only", "model-validation")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "model-validation" in table.stdout and "passed" in table.stdout
    with world.client("vic") as vic:
        history = vic.checks("staging", "risk", 1)
    assert [r["name"] for r in history].count("model-validation") == 2
    # Nobody outside the table runs checks; unknown names are refused naming the configured ones.
    refused = world.cli("check", "risk:1", "--env", "staging", user="vic")
    assert refused.returncode == 1 and "403" in refused.stderr
    unknown = world.cli("check", "risk:1", "--env", "staging", "--only", "nope")
    assert unknown.returncode == 1 and "model-validation" in unknown.stderr
