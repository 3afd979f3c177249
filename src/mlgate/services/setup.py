"""`mlgate init`: the home, the control database, each environment's stores, the first admin."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlgate.adapters.mlflow.stores import create_store
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.domain.permissions import ALL_ENVIRONMENTS, SYSTEM, Role
from mlgate.private_home import PRIVATE_FOLDER_MODE, tighten
from mlgate.services import audit_integrity, audit_keys
from mlgate.services.identity import accounts

FIRST_ADMIN = "admin"


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    admin_token: str | None = None
    tightened: int = 0  # files and folders under the home that group or others had access to

    @property
    def changed(self) -> bool:
        return bool(self.created) or self.admin_token is not None or self.tightened > 0


def _folders(settings: Settings) -> list[tuple[str, Path]]:
    folders: list[tuple[str, Path]] = [
        ("home", settings.home),
        ("logs", settings.logs_dir),
        ("jobs", settings.jobs_dir),
    ]
    for env in settings.environments:
        for label, path in (
            ("artifact root", env.artifact_root),
            ("data", env.data_dir),
            ("serving", env.serving_dir),
            ("monitoring", env.monitoring_dir),
        ):
            folders.append((f"{env.name} {label}", path))
    return folders


def _store_exists(tracking_store: str) -> bool:
    if tracking_store.startswith("sqlite:///"):
        return Path(tracking_store.removeprefix("sqlite:///")).exists()
    return False  # a remote store: creating it is idempotent, so always make sure


def initialize(settings: Settings) -> InitReport:
    """Idempotent: a second run changes nothing and reports so. Ends by making the home private."""
    report = InitReport()
    for label, path in _folders(settings):
        if not path.exists():
            path.mkdir(parents=True, mode=PRIVATE_FOLDER_MODE)
            report.created.append(f"{label}: {path}")
    keys = audit_keys.load_or_create(settings.home)
    db = Database(settings.database_url, audit_mac_key=keys.mac_key)
    try:
        if migrate.upgrade(db):
            report.created.append(f"control database at revision {migrate.head_revision()}")
        if keys.created:
            audit_integrity.seal_unauthenticated(db, keys)
            report.created.append(f"audit keys in {audit_keys.secrets_dir(settings.home)}")
        made = None  # the store made first: the pattern of the next (a copy, not MLflow's migrations again)
        for env in settings.environments:
            if not _store_exists(env.tracking_store):
                create_store(env, like=made)
                made = env
                report.created.append(f"{env.name} MLflow store: {env.tracking_store}")
        if not accounts.has_human_users(db):
            bindings = [accounts.Binding(Role.ADMIN, ALL_ENVIRONMENTS)]
            _, issued = accounts.create_user(db, actor=SYSTEM, name=FIRST_ADMIN, bindings=bindings)
            report.admin_token = issued.value
    finally:
        db.dispose()
    report.tightened = tighten(settings.home)
    return report
