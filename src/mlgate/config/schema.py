"""The mlgate.yaml file's schema: every section as a strict pydantic model, with the rules one section can
check alone (names, ranges, unique entries). Rules across sections are `settings.resolve`'s."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from mlgate.adapters import registry
from mlgate.domain import network_targets
from mlgate.domain.command_checks import with_policy_config
from mlgate.domain.monitors import ACTIONS, DEFAULT_SIGNALS, MONITOR_NAME, SIGNALS, Schedule, Window
from mlgate.domain.monitors import thresholds as monitor_thresholds
from mlgate.domain.permissions import Role

DEFAULT_HOME = ".mlgate"
DEFAULT_SERVER_PORT = 8750
DEFAULT_ENVIRONMENTS = ("dev", "staging", "production")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
CHECK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENV_VAR = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


def _path_text(value: str) -> str:
    if "\0" in value:  # no file system takes one; resolving the path would raise, not name the key
        raise ValueError("expected a path, got one with a NUL character")
    return value


# A file or folder the config names, relative to the config's folder or absolute.
PathText = Annotated[str, AfterValidator(_path_text)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class EnvironmentConfig(_Strict):
    name: str
    tracking_store: str | None = None
    artifact_root: PathText | None = None
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
    # What one caller's connection may take: its request's headers must arrive within header_timeout_s,
    # its body within body_timeout_s of them (long: artifacts of gigabytes stream through the MLflow door),
    # and at most max_connections connections are open at once.
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    body_timeout_s: float = Field(default=900.0, gt=0, le=86400)
    max_connections: int = Field(default=1024, ge=1, le=65536, strict=True)

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
    events: list[str] | None = None  # None: every event but audit.checkpoint (named only)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value


class NotificationsConfig(_Strict):
    smtp: SmtpConfig | None = None
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    # Webhooks may target only public addresses, and private ones (loopback, link-local, private ranges)
    # in these networks: `10.1.2.0/24`, `127.0.0.1`. Checked for a literal address here and for every
    # address a name resolves to when a delivery is sent.
    webhook_private_networks: list[str] = Field(default_factory=list, max_length=64)
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

    @field_validator("webhook_private_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for text in value:
            network_targets.parse_network(text)
        return value

    @model_validator(mode="after")
    def _public_webhooks(self) -> NotificationsConfig:
        """A webhook whose URL names a private address (or `localhost`) the networks do not allow."""
        allowed = [network_targets.parse_network(text) for text in self.webhook_private_networks]
        for hook in self.webhooks:
            host = urlsplit(hook.url).hostname or ""
            address = network_targets.literal(host)
            if address is None and host.lower() in network_targets.LOCAL_NAMES:
                address = ipaddress.ip_address("127.0.0.1")
            problem = network_targets.refusal(address, allowed) if address is not None else None
            if problem:
                raise ValueError(f"webhook '{hook.name}' targets {host}: {problem}")
        return self


class LimitsConfig(_Strict):
    """What one sandboxed process may use; null leaves a limit off."""

    cpu_seconds: int | None = Field(default=4 * 3600, ge=1, strict=True)
    memory_mb: int | None = Field(default=16 * 1024, ge=64, strict=True)
    processes: int | None = Field(default=512, ge=16, strict=True)  # enforced when the server is not root


def _known_backend(seam: registry.Seam, name: str) -> str:
    if name not in registry.names(seam):
        raise ValueError(f"unknown backend '{name}'; expected one of: {', '.join(registry.names(seam))}")
    return name


class ExecutionConfig(_Strict):
    """How jobs, checks and serving hosts run: `bwrap` isolates each; `none` is for a one-person laptop.
    `backend` is where jobs run (`mlgate.adapters.registry`)."""

    backend: str = "local"
    sandbox: Literal["bwrap", "none"] = "bwrap"
    limits: LimitsConfig = LimitsConfig()

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        return _known_backend("execution", value)


class TrackingConfig(_Strict):
    """Where each environment's MLflow tracking and registry server runs (`mlgate.adapters.registry`)."""

    backend: str = "local"

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        return _known_backend("tracking", value)


class ServingConfig(_Strict):
    """How every environment's serving host runs, and what callers may take of it (the timeouts and limits
    hold per host process: each of `workers` has its own)."""

    workers: int = Field(default=1, ge=1, le=64, strict=True)
    max_batch_size: int = Field(default=64, ge=1, le=4096, strict=True)
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=1024**3, strict=True)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=512, ge=1, le=65536, strict=True)
    max_concurrency: int = Field(default=128, ge=1, le=65536, strict=True)
    # The name of the server's variable holding the token `/metrics` asks for; never the token itself.
    metrics_token_env: str | None = Field(default="MLGATE_METRICS_TOKEN", pattern=ENV_VAR)
    backend: str = "local"

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        return _known_backend("serving", value)

    @model_validator(mode="after")
    def _concurrency(self) -> ServingConfig:
        if self.max_concurrency > self.max_connections:
            raise ValueError(
                f"max_concurrency ({self.max_concurrency}) must not exceed max_connections ({self.max_connections}): "
                "each request in flight holds a connection"
            )
        return self


class SloConfig(_Strict):
    """What a new slot must keep during a rollout, measured on its own requests."""

    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    p95_ms: float = Field(default=250.0, gt=0)
    min_requests: int = Field(default=20, ge=1, strict=True)  # fewer than this in a step: not judged yet


class QualityConfig(_Strict):
    """What a new slot's answers must keep during a rollout, held against the stable slot's on the same
    requests (see `mlgate.domain.rollout_quality`)."""

    # Of the requests either slot answers, the share the other slot scores too, off the callers' path (0: off).
    shadow_share: float = Field(default=0.2, ge=0, le=1)
    max_disagreement: float = Field(default=0.2, ge=0, le=1)  # rows answered unlike the stable slot
    max_prediction_drift: float = Field(default=0.25, ge=0)  # PSI against the stable slot's predictions
    min_compared: int = Field(default=50, ge=1, strict=True)  # fewer rows compared in a step: not judged
    tolerance: float = Field(default=0.01, ge=0)  # numbers: how far apart (times max(1, |stable|)) still agrees


class EndpointConfig(_Strict):
    name: str
    description: str = ""
    # Production rollouts: versions of `model` that pass the gate into this environment roll out here.
    model: str | None = None
    strategy: Literal["blue-green", "canary"] = "blue-green"
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100])  # canary traffic shares, ending at 100
    bake_time_s: float = Field(default=30.0, ge=0, le=24 * 3600)  # per step, watching the SLOs
    slo: SloConfig = SloConfig()
    quality: QualityConfig = QualityConfig()
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


class AuditConfig(_Strict):
    """Checkpoints of the audit chain's head: signed, written outside the database (see SECURITY.md)."""

    # A checkpoint is due once this many events were recorded since the last, or this long has passed
    # since the last with any event recorded in between.
    checkpoint_every_events: int = Field(default=100, ge=1, le=1_000_000, strict=True)
    checkpoint_every_minutes: float = Field(default=10.0, gt=0, le=10080)
    # The append-only checkpoint file; relative to mlgate.yaml's folder. Default: beside the home,
    # `<home>.audit-checkpoints.jsonl`, so that it does not go with the home's copies and backups.
    checkpoint_file: PathText | None = None


class RetentionConfig(_Strict):
    """How long each environment's monitoring store keeps request rows and their labels; null leaves a
    limit off. Whole hours go, oldest first, and each deletion is in the audit log."""

    max_age_days: float | None = Field(default=90.0, gt=0, le=36500)
    # The store of one environment (every endpoint's requests and labels); the hour being written stays.
    max_bytes: int | None = Field(default=None, ge=1024 * 1024, strict=True)


class MonitoringStoreConfig(_Strict):
    """The upkeep of each environment's monitoring store (`mlgate.services.monitoring.store_upkeep`)."""

    # An hour's parts are compacted into one (sorted by time) this long after the hour ended.
    compact_after_s: float = Field(default=600.0, ge=0, le=7 * 86400)
    compact_max_rows: int = Field(default=2_000_000, ge=1000, le=100_000_000, strict=True)  # per compacted part
    upkeep_interval_s: float = Field(default=300.0, gt=0, le=86400)
    retention: RetentionConfig = RetentionConfig()


class FileConfig(_Strict):
    """The mlgate.yaml schema. Sections later parts of mlgate read are accepted and kept as given."""

    home: PathText = DEFAULT_HOME
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    environments: list[EnvironmentConfig] = Field(
        default_factory=lambda: [EnvironmentConfig(name=n) for n in DEFAULT_ENVIRONMENTS]
    )
    gates: list[GateConfig] | None = None
    checks: ChecksConfig = ChecksConfig()
    serving: ServingConfig = ServingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    tracking: TrackingConfig = TrackingConfig()
    endpoints: dict[str, list[EndpointConfig]] = Field(default_factory=dict)
    monitors: list[MonitorConfig] = Field(default_factory=list)
    notifications: NotificationsConfig = NotificationsConfig()
    audit: AuditConfig = AuditConfig()
    monitoring: MonitoringStoreConfig = MonitoringStoreConfig()
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
