"""The project sections of mlgate.yaml (`train`), read from the code snapshot a job runs.

The server never takes policy from a snapshot: only `train` is read here, so what ran is exactly what
the lineage records, and nothing uploaded can relax a gate.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from mlgate import yaml_text
from mlgate.domain.jobs import DEFAULT_TIMEOUT_MINUTES, ENVIRONMENTS, DataRef, TrainSpec
from mlgate.errors import ValidationError


class TrainSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1)
    data: list[str] = Field(default_factory=list)
    environment: str = "inherit"
    timeout_minutes: float = Field(default=DEFAULT_TIMEOUT_MINUTES, gt=0, le=7 * 24 * 60)
    requirements: str = "requirements.txt"
    # The label column of the training data, for the baseline profile `mlgate register` makes.
    label: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if value not in ENVIRONMENTS:
            raise ValueError(f"expected one of: {', '.join(ENVIRONMENTS)}")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value: list[str]) -> list[str]:
        names = [DataRef.parse(item).name for item in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # one path per name in the command: two versions of one asset would be ambiguous
            raise ValueError(f"names the data asset '{twice[0]}' more than once")
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not value.strip() or path.is_absolute() or ".." in path.parts:
            raise ValueError(f"expected a file path inside the project, got {value!r}")
        return value


def train_spec(config_text: str, *, source: str = "mlgate.yaml") -> TrainSpec:
    """The validated `train` section; errors name the key and what was expected."""
    try:
        data: Any = yaml_text.load(config_text) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise ValidationError(f"{source} has no `train` section: add one with the training `command` (and its `data`)")
    try:
        section = TrainSection.model_validate(data["train"])
    except PydanticValidationError as exc:
        problems = [
            f"train.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ValidationError(f"{source}: " + "; ".join(problems), details={"problems": problems}) from exc
    refs = tuple(DataRef.parse(item) for item in section.data)
    spec = TrainSpec(
        command=section.command,
        data=refs,
        environment=section.environment,
        timeout_minutes=section.timeout_minutes,
        requirements=section.requirements,
        label=section.label,
    )
    missing = spec.placeholders() - {ref.name for ref in refs}
    if missing:
        raise ValidationError(
            f"{source}: train.command uses ${{data.{sorted(missing)[0]}}} but train.data does not list it",
            details={"missing": sorted(missing)},
        )
    return spec
