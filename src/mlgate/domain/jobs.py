"""Jobs: their states, and the project's `train` section as a job spec."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from enum import StrEnum

from mlgate.domain.limits import MAX_ROW_ID, row_id_in_range


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


DATA_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]{0,63})(?:@(?P<version>[1-9][0-9]*))?$")
PLACEHOLDER = re.compile(r"\$\{data\.([a-z0-9][a-z0-9._-]{0,63})\}")
DEFAULT_TIMEOUT_MINUTES = 60
ENVIRONMENTS = ("inherit", "venv")


@dataclass(frozen=True)
class DataRef:
    name: str
    version: int | None  # None: the latest version when the job starts

    @classmethod
    def parse(cls, text: str) -> DataRef:
        match = DATA_REF.match(text.strip())
        if not match:
            raise ValueError(f"expected NAME or NAME@VERSION, got {text!r}")
        version = match.group("version")
        if version and not row_id_in_range(int(version)):
            raise ValueError(f"version {version} of {match.group('name')!r} is out of range (1 to {MAX_ROW_ID})")
        return cls(match.group("name"), int(version) if version else None)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


@dataclass(frozen=True)
class TrainSpec:
    """The `train` section of a project's mlgate.yaml, validated."""

    command: str
    data: tuple[DataRef, ...] = ()
    environment: str = "inherit"
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES
    requirements: str = "requirements.txt"
    label: str | None = None  # the training data's label column, for the registered model's profile
    extra: dict[str, str] = field(default_factory=dict)

    def placeholders(self) -> set[str]:
        return set(PLACEHOLDER.findall(self.command))


def render_command(command: str, paths: dict[str, str]) -> str:
    """Replace each ${data.NAME} with the materialized path of that data asset, quoted for the shell:
    a path holds the uploader's file names, which must reach the command as one word, never as code."""

    def substitute(match: re.Match[str]) -> str:
        return shlex.quote(paths[match.group(1)])

    return PLACEHOLDER.sub(substitute, command)
