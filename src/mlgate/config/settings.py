"""Settings: mlgate.yaml found, parsed and resolved into the typed `Settings` the server and CLI use.

The file has policy sections (environments, database, server, gates, checks, endpoints, monitors,
notifications, serving, execution), which only the server reads from the file it was started with, and
project sections (train, data), which jobs read from the code snapshot they run.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml
from pydantic import ValidationError as PydanticValidationError

from mlgate import yaml_text
from mlgate.config.schema import (
    ChecksConfig,
    EndpointConfig,
    ExecutionConfig,
    FileConfig,
    ServingConfig,
)
from mlgate.domain.environments import EnvironmentKind, kind_at
from mlgate.domain.gates import GATE_B_CHECKS, Gate
from mlgate.domain.permissions import Role
from mlgate.errors import ConfigError, NotFoundError

CONFIG_FILE = "mlgate.yaml"


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
    summary_dir: Path  # the control plane's own summaries of the monitoring store's hours
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

    @property
    def audit_checkpoint_file(self) -> Path:
        """Where the audit chain's signed checkpoints go: outside the home unless configured otherwise."""
        configured = self.raw.audit.checkpoint_file
        if configured:
            return (self.config_path.parent / os.path.expanduser(configured)).resolve()
        return self.home.parent / f"{self.home.name}.audit-checkpoints.jsonl"


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
        data = yaml_text.load(text)
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
                summary_dir=env_dir / "monitoring-summaries",
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
