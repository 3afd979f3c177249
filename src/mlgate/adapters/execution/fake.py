"""A fake execution backend for unit tests: jobs 'run' in memory and finish when the test says so."""

from __future__ import annotations

import itertools

from mlgate.adapters.execution.base import JobLaunch, JobOutcome
from mlgate.config import Settings


class FakeBackend:
    name = "fake"

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeBackend:
        return cls()

    def __init__(self) -> None:
        self.launched: dict[str, JobLaunch] = {}
        self.exit_codes: dict[str, int] = {}
        self.cancelled: set[str] = set()
        self.lost: set[str] = set()
        self._ids = itertools.count(1)

    def submit(self, launch: JobLaunch) -> str:
        handle = f"fake-{next(self._ids)}"
        self.launched[handle] = launch
        return handle

    def finish(self, handle: str, exit_code: int = 0, log: str = "") -> None:
        if log:
            launch = self.launched[handle]
            launch.log_path.parent.mkdir(parents=True, exist_ok=True)
            with launch.log_path.open("a") as out:
                out.write(log)
        self.exit_codes[handle] = exit_code

    def lose(self, handle: str) -> None:
        """The job's process ended where this backend cannot see how (as after a server restart)."""
        self.lost.add(handle)

    def poll(self, handle: str) -> JobOutcome:
        if handle in self.lost:
            return JobOutcome(running=False, exit_code=None)
        if handle in self.cancelled:
            return JobOutcome(running=False, exit_code=-15)
        if handle in self.exit_codes:
            return JobOutcome(running=False, exit_code=self.exit_codes[handle])
        return JobOutcome(running=True)

    def cancel(self, handle: str) -> None:
        self.cancelled.add(handle)
