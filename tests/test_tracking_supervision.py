"""The server supervises its MLflow tracking servers: a killed one comes back, and `stop` stops them all."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx

from mlgate.runtime import alive
from tests.conftest import Project, bearer, start_server, stop_server


def _tracking(url: str) -> dict[str, dict[str, object]]:
    health: dict[str, dict[str, dict[str, object]]] = httpx.get(f"{url}/api/v1/health").json()
    return health["tracking"]


def test_killed_tracking_server_is_restarted_and_stop_ends_everything(project: Project) -> None:
    server = start_server(project)
    try:
        record = json.loads((project.settings.home / "server.json").read_text())
        before = _tracking(server.url)
        assert all(state["ready"] for state in before.values())
        assert sorted(int(str(s["pid"])) for s in before.values()) == sorted(record["children"])

        victim = int(str(before["dev"]["pid"]))
        os.killpg(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:
            state = _tracking(server.url)["dev"]
            if state["restarts"] == 1 and state["ready"]:
                break
            assert time.monotonic() < deadline, f"dev tracking server not restarted: {state}"
            time.sleep(0.5)
        assert state["pid"] != victim

        # The door works again against the restarted server, on the same store.
        search = httpx.post(
            f"{server.url}/mlflow/dev/api/2.0/mlflow/experiments/search",
            json={"max_results": 10},
            headers=bearer(project.tokens["dana"]),
        )
        assert search.status_code == 200
        assert "Default" in [e["name"] for e in search.json()["experiments"]]
        children = [int(str(s["pid"])) for s in _tracking(server.url).values()]
    finally:
        stop_server(server)

    assert not alive(server.process.pid)
    assert not [pid for pid in children if alive(pid)], "tracking servers outlived `mlgate stop`"
    assert not (project.settings.home / "server.json").exists()
