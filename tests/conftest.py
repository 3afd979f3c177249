"""Shared fixtures: one initialized home built per session and copied per test, API clients, a live server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mlgate.adapters.sql.database import Database
from mlgate.config import Settings, default_config_text, load_settings
from mlgate.domain.permissions import Role
from mlgate.ports import free_port
from mlgate.services.identity import accounts
from mlgate.services.setup import initialize

VENV_BIN = Path(sys.executable).parent
MLGATE = str(VENV_BIN / "mlgate")

# The demo's team, used across tests: name -> (roles, environments).
TEAM: dict[str, tuple[list[str], list[str]]] = {
    "dana": (["data-scientist"], ["dev"]),
    "lee": (["lead-data-scientist"], ["dev", "staging"]),
    "sam": (["software-developer"], ["staging", "production"]),
    "olu": (["operator"], ["staging", "production"]),
    "vic": (["viewer"], ["dev", "staging", "production"]),
}


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests get their own HOME and none of the caller's mlgate or MLflow settings."""
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    for name in ("MLGATE_URL", "MLGATE_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
        os.environ.pop(name, None)


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

    def db(self) -> Database:
        return Database(self.settings.database_url)

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


def _write_config(folder: Path, *, port: int = 0) -> Path:
    config = folder / "mlgate.yaml"
    config.write_text(default_config_text().replace("port: 8750", f"port: {port}"))
    return config


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Built once per session: init, then the team's accounts."""
    folder = tmp_path_factory.mktemp("template")
    settings = load_settings(_write_config(folder))
    report = initialize(settings)
    assert report.admin_token
    project = Project(folder, {"admin": report.admin_token})
    db = Database(settings.database_url)
    for name, (roles, envs) in TEAM.items():
        bindings = accounts.parse_bindings(roles, envs, settings.env_names)
        _, issued = accounts.create_user(db, actor="admin", name=name, bindings=bindings, email=f"{name}@example.com")
        project.tokens[name] = issued.value
    db.dispose()
    return project


@pytest.fixture
def project(project_template: Project, tmp_path: Path) -> Project:
    """A private copy of the template project for one test."""
    return project_template.copy(tmp_path / "project")


@pytest.fixture
def api(project: Project) -> Iterator[httpx.Client]:
    """The REST API in-process (FastAPI TestClient), with fake tracking servers and serving hosts."""
    from fastapi.testclient import TestClient

    from mlgate.adapters.mlflow.fake import FakeTrackingServers
    from mlgate.adapters.serving.fake import FakeServingBackend
    from mlgate.interfaces.api.app import create_app

    settings = project.settings
    app = create_app(
        settings,
        base_url="http://testserver",
        tracking=FakeTrackingServers(settings.env_names),
        serving=FakeServingBackend(),
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class LiveServer:
    project: Project
    url: str
    process: subprocess.Popen[bytes]


def start_server(project: Project, *, timeout_s: float = 120.0, env: dict[str, str] | None = None) -> LiveServer:
    """`mlgate server` as a real subprocess on a free port; returns once /api/v1/health answers.
    `env`: variables added to the server's environment (secrets the config names, say)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))} | (env or {})
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


@pytest.fixture(scope="session")
def live_server(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server (with its MLflow tracking servers) per test session and worker."""
    folder = tmp_path_factory.mktemp("live") / "project"
    server = start_server(project_template.copy(folder))
    yield server
    stop_server(server)


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


__all__ = [
    "MLGATE",
    "TEAM",
    "LiveServer",
    "Project",
    "Role",
    "bearer",
    "processes_named",
    "start_server",
    "stop_server",
]
