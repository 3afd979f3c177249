"""The execution seam: submit a prepared job, poll it, cancel it. Backends are chosen by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class JobLaunch:
    """Everything a backend needs: the job's folder is prepared (code, data) before this is built."""

    job_id: int
    command: str  # run by a shell, in workdir
    workdir: Path
    env: dict[str, str]
    log_path: Path
    python_bin: Path | None = None  # the bin/ folder put first on PATH (a job venv), if any


@dataclass(frozen=True)
class JobOutcome:
    running: bool
    exit_code: int | None = None


class ExecutionBackend(Protocol):
    name: str

    def submit(self, launch: JobLaunch) -> str:
        """Start the job; returns a handle the backend understands (a pid, a Ray submission id)."""
        ...

    def poll(self, handle: str) -> JobOutcome: ...

    def cancel(self, handle: str) -> None: ...


BACKENDS: dict[str, Callable[[], ExecutionBackend]] = {}


def backend(name: str) -> ExecutionBackend:
    from mlgate.adapters.execution import fake, local  # noqa: F401  (they register themselves)

    try:
        return BACKENDS[name]()
    except KeyError:
        from mlgate.errors import ConfigError

        raise ConfigError(
            f"unknown execution backend '{name}'; expected one of: {', '.join(sorted(BACKENDS))}"
        ) from None
