"""The server's own routes: its background workers, as an administrator sees them."""

from __future__ import annotations

import time

import httpx

from tests.support.project import Project, bearer

WORKERS = {
    "serving-supervisor",
    "job-runner",
    "promotion-worker",
    "delivery-worker",
    "request-expiry",
    "staging-pipeline",
    "rollouts",
    "monitors",
    "retraining",
    "audit-checkpoints",
    "monitoring-store",
}


def test_an_administrator_sees_every_worker_running_and_ticking(api: httpx.Client, project: Project) -> None:
    deadline = time.monotonic() + 30
    while True:
        answer = api.get("/api/v1/workers", headers=bearer(project.tokens["admin"]))
        assert answer.status_code == 200, answer.text
        workers = {w["name"]: w for w in answer.json()["data"]}
        if workers["job-runner"]["ticks"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(workers) == WORKERS
    # the rollout worker has nothing to watch until an endpoint takes rollouts: it never started
    assert {name for name, w in workers.items() if not w["running"]} == {"rollouts"}
    assert workers["job-runner"]["ticks"] > 0 and workers["job-runner"]["failures"] == 0
    refused = api.get("/api/v1/workers", headers=bearer(project.tokens["olu"]))
    assert refused.status_code == 403
