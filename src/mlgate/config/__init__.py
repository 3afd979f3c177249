"""mlgate.yaml and settings: the file's schema (`schema`), its resolution into typed `Settings`
(`settings`) and the file `mlgate init` writes (`default.yaml`, every key at its default, commented).

Callers import from here; the submodules are where each part is written.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from mlgate.config.schema import (
    CHECK_NAME,
    DEFAULT_ENVIRONMENTS,
    DEFAULT_HOME,
    DEFAULT_SERVER_PORT,
    ENDPOINT_NAME,
    ENV_NAME,
    ChecksConfig,
    CommandCheckConfig,
    DatabaseConfig,
    EndpointConfig,
    EndpointTestsConfig,
    EnvironmentConfig,
    ExecutionConfig,
    FileConfig,
    GateConfig,
    LimitsConfig,
    ModelValidationConfig,
    MonitorConfig,
    NotificationsConfig,
    QualityConfig,
    RetrainConfig,
    ServerConfig,
    ServingConfig,
    SloConfig,
    SmtpConfig,
    TrackingConfig,
    WebhookConfig,
)
from mlgate.config.settings import CONFIG_FILE, Environment, Settings, find_config, load_settings, parse_config, resolve


@cache
def default_config_text() -> str:
    """The mlgate.yaml `mlgate init` writes: every key optional, the values shown the defaults."""
    return resources.files(__name__).joinpath("default.yaml").read_text(encoding="utf-8")


__all__ = [
    "CHECK_NAME",
    "CONFIG_FILE",
    "DEFAULT_ENVIRONMENTS",
    "DEFAULT_HOME",
    "DEFAULT_SERVER_PORT",
    "ENDPOINT_NAME",
    "ENV_NAME",
    "ChecksConfig",
    "CommandCheckConfig",
    "DatabaseConfig",
    "EndpointConfig",
    "EndpointTestsConfig",
    "Environment",
    "EnvironmentConfig",
    "ExecutionConfig",
    "FileConfig",
    "GateConfig",
    "LimitsConfig",
    "ModelValidationConfig",
    "MonitorConfig",
    "NotificationsConfig",
    "QualityConfig",
    "RetrainConfig",
    "ServerConfig",
    "ServingConfig",
    "Settings",
    "SloConfig",
    "SmtpConfig",
    "TrackingConfig",
    "WebhookConfig",
    "default_config_text",
    "find_config",
    "load_settings",
    "parse_config",
    "resolve",
]
