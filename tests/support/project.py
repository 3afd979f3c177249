"""A test project (a folder with mlgate.yaml and an initialized home), its people, the `mlgate` CLI run in it,
and `mlgate server` run on it as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlgate.adapters.sql.database import Database
from mlgate.config import Settings, default_config_text, load_settings
from mlgate.ports import free_port
from mlgate.services import audit_keys

VENV_BIN = Path(sys.executable).parent
MLGATE = str(VENV_BIN / "mlgate")
# Every test server's metrics token (`serving.metrics_token_env`'s default variable): what a Prometheus
# scraping its serving hosts' /metrics would present.
METRICS_TOKEN = "metrics-token-of-the-test-servers-0123456789"

# The demo's team, used across tests: name -> (roles, environments).
TEAM: dict[str, tuple[list[str], list[str]]] = {
    "dana": (["data-scientist"], ["dev"]),
    "lee": (["lead-data-scientist"], ["dev", "staging"]),
    "sam": (["software-developer"], ["staging", "production"]),
    "olu": (["operator"], ["staging", "production"]),
    "vic": (["viewer"], ["dev", "staging", "production"]),
}


@dataclass
class Project:
    """A folder with mlgate.yaml and an initialized home, and the tokens of its people."""

    path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.path / "mlgate.yaml"

    @property
    def settings(self) -> Settings:
        return load_settings(self.config)

    def db(self, url: str | None = None) -> Database:
        """The control database as the server opens it (or the one at `url`, with this project's key): its
        audit events authenticated with the home's key."""
        settings = self.settings
        mac_key = audit_keys.load_or_create(settings.home).mac_key
        return Database(url or settings.database_url, audit_mac_key=mac_key)

    def copy(self, folder: Path, *, config: str = "") -> Project:
        """A copy of this project (its home included) in `folder`, with `config` appended to mlgate.yaml."""
        shutil.copytree(self.path, folder)
        if config:
            with (folder / "mlgate.yaml").open("a") as handle:
                handle.write(config)
        return Project(folder, dict(self.tokens))

    def run(
        self, *args: str, token: str | None = None, url: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the `mlgate` CLI in this project, as a user would."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
        if token:
            env["MLGATE_TOKEN"] = token
        if url:
            env["MLGATE_URL"] = url
        return subprocess.run(
            [MLGATE, *args], cwd=self.path, env=env, capture_output=True, text=True, timeout=300, check=check
        )


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without mlgate's, MLflow's or pytest's variables, plus `extra`: what a
    user's own shell would give a script or a CLI call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_", "PYTEST_"))}
    return env | {"MLFLOW_DISABLE_TELEMETRY": "true", **extra}


HEADER_TIMEOUT_S = 3  # the test servers' header deadline: a trickling client is cut off within seconds


def config_text(*, port: int = 0) -> str:
    """The default mlgate.yaml, with the server's port (0: any free one) and a short header deadline."""
    text = default_config_text().replace("port: 8750", f"port: {port}", 1)
    return text.replace("  header_timeout_s: 10\n", f"  header_timeout_s: {HEADER_TIMEOUT_S}\n", 1)


def write_config(folder: Path, *, port: int = 0) -> Path:
    config = folder / "mlgate.yaml"
    config.write_text(config_text(port=port))
    return config


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class LiveServer:
    project: Project
    url: str
    process: subprocess.Popen[bytes]


def start_server(project: Project, *, timeout_s: float = 120.0, env: dict[str, str] | None = None) -> LiveServer:
    """`mlgate server` as a real subprocess on a free port; returns once /api/v1/health answers.
    `env`: variables added to the server's environment (secrets the config names, say), after the metrics
    token."""
    port = free_port()
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
        | {"MLGATE_METRICS_TOKEN": METRICS_TOKEN}
        | (env or {})
    )
    with (project.path / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [MLGATE, "server", "--port", str(port)],
            cwd=project.path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {(project.path / 'server.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return LiveServer(project, url, process)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not start in time")
        time.sleep(0.3)


def stop_server(server: LiveServer) -> None:
    server.project.run("stop")
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


def processes_named(text: str) -> list[int]:
    """The pids of every process on the machine whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
