"""The web UI's world: the served world (two `diabetes` versions in staging, an endpoint there) with both
versions deployed side by side on the staging endpoint, and two more versions registered in dev by dana,
so two gate A requests wait for lee."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Project
from tests.serving_world import SCRIPT, Served, build, clean_env

ENDPOINT = "diabetes"
LOOP = "for c in (1.0, 1e-6):"


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


def build_web(project_template: Project, root: Path) -> WebWorld:
    """The caller stops the server (`stop_server(world.served.server)`)."""
    served = build(project_template, root)
    with served.client("olu") as olu:
        olu.deploy("staging", ENDPOINT, model="diabetes", version=1, slot="blue", traffic=100)
        olu.deploy("staging", ENDPOINT, model="diabetes", version=2, slot="green", traffic=0)
    assert LOOP in SCRIPT
    script = root / "log_more.py"
    script.write_text(SCRIPT.replace(LOOP, "for c in (0.3, 0.05):"))
    env = clean_env(MLFLOW_TRACKING_URI=f"{served.url}/mlflow/dev", MLFLOW_TRACKING_TOKEN=served.project.tokens["dana"])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    opened = []
    with served.client("dana") as dana:
        for run_id in json.loads(done.stdout.strip().splitlines()[-1]):
            registered = dana.register_model("dev", name="diabetes", run_id=run_id)
            opened.append(int(registered["request_id"]))
    return WebWorld(served=served, requests=opened)
