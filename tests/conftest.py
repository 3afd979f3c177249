"""Shared fixtures: the session's templates (an initialized home with the team's accounts, copied per test;
worlds copied per module), API clients, a live server.

The code they share with the tests is in `tests/support/`."""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlgate.adapters.sql.database import Database
from mlgate.config import load_settings
from mlgate.services import audit_keys
from mlgate.services.identity import accounts
from mlgate.services.setup import initialize
from tests.support.project import TEAM, LiveServer, Project, start_server, stop_server, write_config
from tests.support.worlds import PROJECT, Built, Template, built_once


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests get their own HOME and none of the caller's mlgate or MLflow settings."""
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    for name in ("MLGATE_URL", "MLGATE_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
        os.environ.pop(name, None)


@pytest.fixture(scope="session", autouse=True)
def _compiled_sources() -> None:
    """mlgate's modules compiled once for the session: the suite starts hundreds of mlgate processes
    (servers, serving hosts, tracking servers, jobs, the CLI), and where PYTHONDONTWRITEBYTECODE is set
    (CI images often set it) each of them would compile every module it imports again."""
    import mlgate

    compileall.compile_dir(Path(mlgate.__file__).parent, quiet=1)


def _accounts(root: Path) -> Built:
    """init, then the team's accounts."""
    folder = root / PROJECT
    folder.mkdir()
    settings = load_settings(write_config(folder))
    report = initialize(settings)
    assert report.admin_token
    project = Project(folder, {"admin": report.admin_token})
    db = Database(settings.database_url, audit_mac_key=audit_keys.load_or_create(settings.home).mac_key)
    for name, (roles, envs) in TEAM.items():
        bindings = accounts.parse_bindings(roles, envs, settings.env_names)
        accounts.create_user(db, actor="admin", name=name, bindings=bindings, email=f"{name}@example.com")
        # The token the admin created signs the person in; a gate decision needs one they created themselves.
        own = accounts.create_token(db, settings, actor=name, user_name=name, name="own", expires_in=None)
        project.tokens[name] = own.value
    db.dispose()
    return Built(tokens=project.tokens)


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Built once per session (the first worker to ask builds it for all): init, then the team's accounts."""
    template = built_once(tmp_path_factory, "accounts", _accounts)
    return Project(template.root / PROJECT, dict(template.tokens))


@pytest.fixture(scope="session")
def staged_template(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Two versions of `diabetes` promoted into staging, the staging endpoint `diabetes` declared and gate B
    opened by hand (tests/support/serving_world.py); built once per session, by the first module to ask."""
    from tests.support import serving_world

    return built_once(tmp_path_factory, "staged", lambda root: serving_world.template(project_template, root))


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


@pytest.fixture(scope="session")
def live_server(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server (with its MLflow tracking servers) per test session and worker."""
    folder = tmp_path_factory.mktemp("live") / "project"
    server = start_server(project_template.copy(folder))
    yield server
    stop_server(server)
