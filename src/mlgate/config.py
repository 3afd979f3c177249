"""mlgate.yaml and settings: parsed, validated and resolved into typed objects by `load_settings`.

The file has policy sections (environments, database, server, and later gates, checks, endpoints,
monitors, notifications), which only the server reads from the file it was started with, and project
sections (train, data), which jobs read from the code snapshot they run.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from mlgate.domain.command_checks import with_policy_config
from mlgate.domain.environments import EnvironmentKind, kind_at
from mlgate.domain.gates import GATE_B_CHECKS, Gate
from mlgate.domain.monitors import ACTIONS, DEFAULT_SIGNALS, MONITOR_NAME, SIGNALS, Schedule, Window
from mlgate.domain.monitors import thresholds as monitor_thresholds
from mlgate.domain.permissions import Role
from mlgate.errors import ConfigError, NotFoundError

CONFIG_FILE = "mlgate.yaml"
DEFAULT_HOME = ".mlgate"
DEFAULT_SERVER_PORT = 8750
DEFAULT_ENVIRONMENTS = ("dev", "staging", "production")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
CHECK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

DEFAULT_CONFIG_TEXT = """\
# mlgate.yaml: policy (read by the server only) and project sections.
# Paths are relative to this file. Every key is optional; the values shown are the defaults.

# Where mlgate keeps its state: the control database, each environment's stores, logs.
home: .mlgate

# The control database. Default: SQLite under the home. PostgreSQL works too:
#   url: postgresql+psycopg://mlgate:secret@db.example.com:5432/mlgate
database:
  url: null

# The control plane. public_url is the address people and notifications use to reach it.
server:
  host: 127.0.0.1
  port: 8750
  public_url: null

# Environments in promotion order: the first is where people train, the last is production.
# tracking_store: the MLflow backend store URI (default: SQLite at <home>/envs/<name>/mlflow.db)
# artifact_root:  where that environment's artifacts live (default: <home>/envs/<name>/artifacts)
# serving_port:   the environment's serving host port (0 picks a free one at start)
environments:
  - name: dev
    serving_port: 0
  - name: staging
    serving_port: 0
  - name: production
    serving_port: 0

# Each environment's serving host: worker processes, micro-batching of concurrent requests (rows per
# model call, and how long a batch may wait for company), the largest request body it accepts.
serving:
  workers: 1
  max_batch_size: 64
  max_wait_ms: 0
  max_body_bytes: 5242880

# How jobs, checks and serving hosts run. sandbox: bwrap gives each a bubblewrap sandbox (its own
# folder, a read-only Python, no view of the home or of other processes); none runs them with the
# server's powers and is meant for a one-person laptop only. limits apply to every sandboxed process.
execution:
  sandbox: bwrap
  limits:
    cpu_seconds: 14400
    memory_mb: 16384
    processes: 512

# Endpoints the server creates at start, per environment (more with `mlgate endpoints create`).
# Their first keys are shown to nobody: take one with `mlgate endpoints rotate-key NAME --env ENV`.
# endpoints:
#   staging:
#     - name: diabetes
#       description: diabetes risk for the web app

# Checks on the model's code snapshot in staging. lint.config: the ruff configuration (TOML) lint runs
# with, whatever pyproject.toml or ruff.toml the snapshot ships (without it: the snapshot's own).
# checks:
#   lint:
#     command: ruff check .
#     config: |
#       [lint]
#       select = ["E", "F", "W", "B", "S"]
"""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class EnvironmentConfig(_Strict):
    name: str
    tracking_store: str | None = None
    artifact_root: str | None = None
    serving_port: int = Field(default=0, ge=0, le=65535, strict=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError("expected a lowercase name of letters, digits and '-', starting with a letter")
        return value


class DatabaseConfig(_Strict):
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("expected a sqlite:/// or postgresql:// URL")
        return value


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_SERVER_PORT, ge=0, le=65535, strict=True)
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/") if value else value


class GateConfig(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    source: str = Field(alias="from")
    to: str
    approver_role: str
    approvals: int = Field(default=1, ge=1, le=10, strict=True)
    checks: list[str] = Field(default_factory=list)
    expiry_hours: float = Field(default=72, gt=0, le=24 * 365)
    auto_request: bool = True

    @field_validator("approver_role")
    @classmethod
    def _role(cls, value: str) -> str:
        roles = [r.value for r in Role if r is not Role.ADMIN]
        if value not in roles:
            raise ValueError(f"expected one of: {', '.join(roles)}")
        return value


class SmtpConfig(_Strict):
    host: str
    port: int = Field(default=25, ge=1, le=65535, strict=True)
    sender: str
    starttls: bool = False
    username: str | None = None
    password_env: str | None = None  # the name of the variable holding the password; never the password

    @model_validator(mode="after")
    def _login(self) -> SmtpConfig:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together: give both to log in, or neither")
        return self


class WebhookConfig(_Strict):
    name: str
    url: str
    secret_env: str | None = None  # the name of the variable holding the signing secret
    events: list[str] | None = None  # None: every event

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value


class NotificationsConfig(_Strict):
    smtp: SmtpConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    # Delivery retries: the wait doubles from retry_base_seconds up to retry_max_seconds (with jitter);
    # after max_attempts failed attempts a message is marked failed.
    retry_base_seconds: float = Field(default=2.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=600.0, gt=0, le=86400)
    max_attempts: int = Field(default=12, ge=1, le=100, strict=True)

    @field_validator("webhooks")
    @classmethod
    def _unique_webhooks(cls, value: list[WebhookConfig]) -> list[WebhookConfig]:
        names = [hook.name for hook in value]  # deliveries name their webhook: two of one name are ambiguous
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"expected unique names, got duplicate name(s) {', '.join(duplicates)}")
        return value


class LimitsConfig(_Strict):
    """What one sandboxed process may use; null leaves a limit off."""

    cpu_seconds: int | None = Field(default=4 * 3600, ge=1, strict=True)
    memory_mb: int | None = Field(default=16 * 1024, ge=64, strict=True)
    processes: int | None = Field(default=512, ge=16, strict=True)  # enforced when the server is not root


class ExecutionConfig(_Strict):
    """How jobs, checks and serving hosts run: `bwrap` isolates each; `none` is for a one-person laptop."""

    sandbox: Literal["bwrap", "none"] = "bwrap"
    limits: LimitsConfig = LimitsConfig()


class ServingConfig(_Strict):
    """How every environment's serving host runs."""

    workers: int = Field(default=1, ge=1, le=64, strict=True)
    max_batch_size: int = Field(default=64, ge=1, le=4096, strict=True)
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=1024**3, strict=True)


class SloConfig(_Strict):
    """What a new slot must keep during a rollout, measured on its own requests."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    p95_ms: float = Field(default=250.0, gt=0)
    min_requests: int = Field(default=20, ge=1, strict=True)  # fewer than this in a step: not judged yet


class EndpointConfig(_Strict):
    name: str
    description: str = ""
    # Production rollouts: versions of `model` that pass the gate into this environment roll out here.
    model: str | None = None
    strategy: Literal["blue-green", "canary"] = "blue-green"
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100])  # canary traffic shares, ending at 100
    bake_time_s: float = Field(default=30.0, ge=0, le=24 * 3600)  # per step, watching the SLOs
    slo: SloConfig = SloConfig()
    sample_rate: float = Field(default=1.0, ge=0, le=1)  # the share of requests kept for monitoring

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        if not value or value[-1] != 100 or any(not 0 < s <= 100 for s in value) or value != sorted(set(value)):
            raise ValueError("expected increasing percentages from 1 to 100, ending at 100")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not ENDPOINT_NAME.match(value):
            raise ValueError("expected letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value


class RetrainConfig(_Strict):
    """A monitor's `retrain` action: the project's training job in the first environment."""

    data: str | None = None  # the dev data asset to train on (default: the production version's training data)
    include_production_window: bool = True  # add the window's labelled production rows as a new data version
    cooldown_hours: float = Field(default=24.0, ge=0, le=24 * 365)


class MonitorConfig(_Strict):
    """A monitor on an endpoint: which signals, against what thresholds, over what window, how often."""

    name: str
    environment: str | None = None  # default: the last environment (production)
    endpoint: str
    signals: list[Literal[SIGNALS]] = Field(default_factory=lambda: list(DEFAULT_SIGNALS))  # type: ignore[valid-type]
    thresholds: dict[str, float] = Field(default_factory=dict)
    window: str = "1h"  # a lookback (30m, 1h, 1d) or the last rows ("5000 rows")
    schedule: str = "5m"  # an interval, or a 5-field cron expression
    min_rows: int = Field(default=100, ge=1, strict=True)  # fewer rows in a window: no verdict
    consecutive: int = Field(default=2, ge=1, le=100, strict=True)  # K windows to fire, K to resolve
    action: Literal[ACTIONS] = "notify"  # type: ignore[valid-type]
    retrain: RetrainConfig = RetrainConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MONITOR_NAME.match(value):
            raise ValueError("expected lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("signals")
    @classmethod
    def _signals(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"expected at least one of: {', '.join(SIGNALS)}")
        return list(dict.fromkeys(value))

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        monitor_thresholds(value)
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        Window.parse(value)
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        Schedule.parse(value)
        return value


class CommandCheckConfig(_Strict):
    command: str
    timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)
    config: str | None = None  # lint: a ruff configuration (TOML) used instead of any the snapshot ships

    @model_validator(mode="after")
    def _policy_config(self) -> CommandCheckConfig:
        if self.config is not None:
            with_policy_config(self.command, self.config)  # ValueError: not TOML, or not a ruff command
        return self


class ModelValidationConfig(_Strict):
    data: str | None = None  # a data asset registered in staging: NAME or NAME@VERSION (held-out rows)
    label: str | None = None  # its label column (default: the training label from the model's lineage)
    metric: Literal["roc_auc", "accuracy", "f1", "r2", "rmse"] = "roc_auc"
    min: float | None = None  # an absolute floor (a ceiling for rmse)
    max_regression: float | None = Field(default=None, ge=0)  # largest drop against the production champion
    timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)


class EndpointTestsConfig(_Strict):
    endpoint: str | None = None  # the staging endpoint (default: one named like the model)
    slot: str = "candidate"  # deployed there at 0% and reached through the slot header
    requests: int = Field(default=100, ge=1, le=100_000, strict=True)  # for the latency figure
    p95_ms: float = Field(default=250.0, gt=0)
    sample_rows: int = Field(default=20, ge=1, le=10_000, strict=True)  # endpoint vs local predictions


class ChecksConfig(_Strict):
    """The checks the outer loop runs in staging. Other names map to a command each."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    lint: CommandCheckConfig = CommandCheckConfig(command="ruff check .")
    unit_tests: CommandCheckConfig = Field(default=CommandCheckConfig(command="pytest -q"), alias="unit-tests")
    model_validation: ModelValidationConfig = Field(default=ModelValidationConfig(), alias="model-validation")
    endpoint_tests: EndpointTestsConfig = Field(default=EndpointTestsConfig(), alias="endpoint-tests")

    @model_validator(mode="after")
    def _commands(self) -> ChecksConfig:
        for name, raw in (self.model_extra or {}).items():
            if not CHECK_NAME.match(name):
                raise ValueError(f"check name '{name}': expected lowercase letters, digits and '-'")
            if not isinstance(raw, CommandCheckConfig):
                self.model_extra[name] = CommandCheckConfig.model_validate(raw)  # type: ignore[index]
        return self

    @property
    def commands(self) -> dict[str, CommandCheckConfig]:
        """Every command check by name: lint, unit-tests and the named ones."""
        extra = dict(self.model_extra or {})
        return {"lint": self.lint, "unit-tests": self.unit_tests, **extra}


class FileConfig(_Strict):
    """The mlgate.yaml schema. Sections later parts of mlgate read are accepted and kept as given."""

    home: str = DEFAULT_HOME
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    environments: list[EnvironmentConfig] = Field(
        default_factory=lambda: [EnvironmentConfig(name=n) for n in DEFAULT_ENVIRONMENTS]
    )
    gates: list[GateConfig] | None = None
    checks: ChecksConfig = ChecksConfig()
    serving: ServingConfig = ServingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    endpoints: dict[str, list[EndpointConfig]] = Field(default_factory=dict)
    monitors: list[MonitorConfig] = Field(default_factory=list)
    notifications: NotificationsConfig = NotificationsConfig()
    train: Any = None
    data: Any = None

    @field_validator("environments")
    @classmethod
    def _unique_environments(cls, value: list[EnvironmentConfig]) -> list[EnvironmentConfig]:
        if not value:
            raise ValueError("expected at least one environment")
        names = [env.name for env in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"expected unique names, got duplicate name(s) {', '.join(duplicates)}")
        return value


@dataclass(frozen=True)
class Environment:
    """One environment, resolved: absolute paths and its place in the promotion order."""

    name: str
    index: int
    kind: EnvironmentKind
    tracking_store: str
    artifact_root: Path
    data_dir: Path
    serving_dir: Path
    monitoring_dir: Path
    serving_port: int


@dataclass(frozen=True)
class Settings:
    """Everything the server and CLI need, resolved from one mlgate.yaml."""

    config_path: Path
    home: Path
    database_url: str
    server_host: str
    server_port: int
    public_url: str | None
    environments: tuple[Environment, ...]
    gates: tuple[Gate, ...]
    serving: ServingConfig
    execution: ExecutionConfig
    endpoints: dict[str, tuple[EndpointConfig, ...]]
    checks: ChecksConfig
    raw: FileConfig

    @property
    def env_names(self) -> list[str]:
        return [env.name for env in self.environments]

    def gate_into(self, target: str) -> Gate:
        for gate in self.gates:
            if gate.target == target:
                return gate
        raise NotFoundError(f"no gate leads into '{target}'", details={"environment": target})

    def gate_from(self, source: str) -> Gate | None:
        return next((gate for gate in self.gates if gate.source == source), None)

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise NotFoundError(
            f"unknown environment '{name}'; expected one of: {', '.join(self.env_names)}",
            details={"environment": name, "known": self.env_names},
        )

    @property
    def server_json(self) -> Path:
        return self.home / "server.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    def env_dir(self, name: str) -> Path:
        return self.home / "envs" / name


def find_config(start: Path | None = None) -> Path | None:
    """The nearest mlgate.yaml in `start` or one of its parents, or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_config(text: str, *, source: str = CONFIG_FILE) -> FileConfig:
    """Parse and validate the YAML text of a config file; errors name the key and what was expected."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    try:
        return FileConfig.model_validate(data)
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _location(tuple(err["loc"]))
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            got = err.get("input")
            shown = (
                ""
                if err["type"] in {"extra_forbidden", "missing"}
                or isinstance(got, dict | list)
                or f"got {got!r}" in message  # the validator's own message names it already
                else f" (got {got!r})"
            )
            problems.append(f"{where}: {message}{shown}")
        raise ConfigError(f"{source}: " + "; ".join(problems), details={"problems": problems}) from exc


def _default_gates(names: list[str]) -> list[Gate]:
    """Between each environment and the next: a lead data scientist into staging-like ones; a software
    developer, and the outer loop's checks, into production."""
    gates = []
    for index, (source, target) in enumerate(itertools.pairwise(names)):
        into_production = index == len(names) - 2
        gates.append(
            Gate(
                name="B" if into_production and len(names) > 2 else chr(ord("A") + index),
                source=source,
                target=target,
                approver_role=Role.SOFTWARE_DEVELOPER if into_production else Role.LEAD_DATA_SCIENTIST,
                checks=GATE_B_CHECKS if into_production else (),
            )
        )
    return gates


def _gates(config: FileConfig, names: list[str]) -> tuple[Gate, ...]:
    if config.gates is None:
        return tuple(_default_gates(names))
    gates = []
    for index, gate in enumerate(config.gates):
        where = f"gates[{index}]"
        for key, env in (("from", gate.source), ("to", gate.to)):
            if env not in names:
                raise ConfigError(
                    f"mlgate.yaml: {where}.{key}: unknown environment '{env}'; expected one of: {', '.join(names)}"
                )
        if names.index(gate.to) != names.index(gate.source) + 1:
            raise ConfigError(f"mlgate.yaml: {where}: a gate leads from an environment to the next one in order")
        gates.append(
            Gate(
                name=gate.name or f"{gate.source}->{gate.to}",
                source=gate.source,
                target=gate.to,
                approver_role=Role(gate.approver_role),
                approvals=gate.approvals,
                checks=tuple(gate.checks),
                expiry=timedelta(hours=gate.expiry_hours),
                auto_request=gate.auto_request,
            )
        )
    targets = [g.target for g in gates]
    if len(set(targets)) != len(targets):
        raise ConfigError("mlgate.yaml: gates: more than one gate into the same environment")
    return tuple(gates)


def _endpoints(config: FileConfig, names: list[str]) -> dict[str, tuple[EndpointConfig, ...]]:
    declared = {}
    for env, endpoints in config.endpoints.items():
        if env not in names:
            raise ConfigError(f"mlgate.yaml: endpoints.{env}: unknown environment; expected one of: {', '.join(names)}")
        seen = [e.name for e in endpoints]
        duplicates = sorted({n for n in seen if seen.count(n) > 1})
        if duplicates:
            raise ConfigError(f"mlgate.yaml: endpoints.{env}: duplicate endpoint name(s) {', '.join(duplicates)}")
        declared[env] = tuple(endpoints)
    return declared


def _check_monitors(config: FileConfig, names: list[str]) -> None:
    seen: set[tuple[str, str]] = set()
    for index, monitor in enumerate(config.monitors):
        env = monitor.environment or names[-1]
        if env not in names:
            raise ConfigError(
                f"mlgate.yaml: monitors[{index}].environment: unknown environment '{env}'; "
                f"expected one of: {', '.join(names)}"
            )
        if (env, monitor.name) in seen:
            raise ConfigError(f"mlgate.yaml: monitors[{index}]: a second monitor named '{monitor.name}' in '{env}'")
        seen.add((env, monitor.name))


def resolve(config: FileConfig, config_path: Path) -> Settings:
    """Turn a validated file into Settings: absolute paths, defaults filled in."""
    _check_monitors(config, [env.name for env in config.environments])
    base = config_path.parent.resolve()
    home = (base / os.path.expanduser(config.home)).resolve()
    count = len(config.environments)
    environments = []
    for index, env in enumerate(config.environments):
        env_dir = home / "envs" / env.name
        artifact_root = (base / env.artifact_root).resolve() if env.artifact_root else env_dir / "artifacts"
        tracking_store = env.tracking_store or f"sqlite:///{env_dir / 'mlflow.db'}"
        environments.append(
            Environment(
                name=env.name,
                index=index,
                kind=kind_at(index, count),
                tracking_store=tracking_store,
                artifact_root=artifact_root,
                data_dir=env_dir / "data",
                serving_dir=env_dir / "serving",
                monitoring_dir=env_dir / "monitoring",
                serving_port=env.serving_port,
            )
        )
    return Settings(
        config_path=config_path.resolve(),
        home=home,
        database_url=config.database.url or f"sqlite:///{home / 'control.db'}",
        server_host=config.server.host,
        server_port=config.server.port,
        public_url=config.server.public_url,
        environments=tuple(environments),
        gates=_gates(config, [env.name for env in environments]),
        serving=config.serving,
        execution=config.execution,
        endpoints=_endpoints(config, [env.name for env in environments]),
        checks=config.checks,
        raw=config,
    )


def load_settings(path: Path | None = None) -> Settings:
    """Load the given mlgate.yaml, or the nearest one above the working directory."""
    config_path = path or find_config()
    if config_path is None:
        raise ConfigError(f"no {CONFIG_FILE} here or in any parent folder; run `mlgate init` to create one")
    try:
        text = config_path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {config_path}: {exc.strerror}") from exc
    return resolve(parse_config(text, source=str(config_path)), config_path)
