"""The execution seam: submit a prepared job, poll it, cancel it. Backends are chosen by name.

A job's folder (its log, its working directory) is shared by the runner and the backend. A backend
whose jobs can outlive the server that started them writes the command's exit code to
`EXIT_STATUS_FILE` in that folder when it ends: a later server, whose `poll` can only tell that the
process is gone (`exit_code=None`), reads it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlgate.sandbox import Mount, Sandbox

EXIT_STATUS_FILE = "exit_status"


@dataclass(frozen=True, kw_only=True)
class JobLaunch:
    """Everything a backend needs: the job's folder is prepared (code, data) before this is built.

    The command runs in `sandbox`, which sees `workdir` read-write and `mounts` (a job venv, read-only)
    besides the Python environment; the log and the exit status are written from outside it, so the
    job can neither read its own log file's neighbours nor forge how it ended.
    """

    job_id: int
    command: str  # run by a shell, in workdir
    workdir: Path
    env: dict[str, str]
    log_path: Path
    sandbox: Sandbox
    python_bin: Path | None = None  # the bin/ folder put first on PATH (a job venv), if any
    mounts: tuple[Mount, ...] = ()

    @property
    def exit_status_path(self) -> Path:
        return self.log_path.parent / EXIT_STATUS_FILE


@dataclass(frozen=True)
class JobOutcome:
    running: bool
    exit_code: int | None = None  # when not running: None if the backend cannot tell (see EXIT_STATUS_FILE)


class ExecutionBackend(Protocol):
    name: str

    def submit(self, launch: JobLaunch) -> str:
        """Start the job; returns a handle the backend understands (a pid, a Ray submission id)."""
        ...

    def poll(self, handle: str) -> JobOutcome: ...

    def cancel(self, handle: str) -> None:
        """Stop the job and everything it started; returns once they are gone (or after a grace period)."""
        ...
