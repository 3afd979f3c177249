"""The `local` execution backend: each job a shell subprocess in its own folder and process group.

The job's command runs in the launch's sandbox (bubblewrap: its own pid namespace, so nothing it
starts outlives it); the shell around it, which records the exit status, runs outside.

Jobs run detached from the server (their own session), so a server restart does not stop them. The
handle is `pid:start-time`, so a later server recognises the process it adopts and never signals an
unrelated one that happens to reuse the pid; the job's exit code lands in its folder
(`EXIT_STATUS_FILE`), which is how a later server learns how an adopted job ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

from mlgate.adapters.execution.base import JobLaunch, JobOutcome
from mlgate.config import Settings
from mlgate.processes import handle_alive, parse_handle, start_time
from mlgate.sandbox import Mount

CANCEL_GRACE_S = 5.0
# The job's command runs in the sandbox ("$@"); the outer shell (the process group's leader, outside
# the sandbox) records the exit status atomically once the command has ended, then exits with it.
WRAPPER = (
    'status_file=$1; shift; "$@"; status=$?; '
    'echo "$status" > "$status_file.partial" && mv -f "$status_file.partial" "$status_file"; exit "$status"'
)


class LocalBackend:
    name = "local"

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        return cls()

    def __init__(self) -> None:
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def submit(self, launch: JobLaunch) -> str:
        env = dict(launch.env)
        if launch.python_bin is not None:
            env["PATH"] = f"{launch.python_bin}{os.pathsep}{env.get('PATH', os.defpath)}"
            env["VIRTUAL_ENV"] = str(launch.python_bin.parent)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        launch.exit_status_path.unlink(missing_ok=True)
        mounts = (Mount(launch.workdir, writable=True), *launch.mounts)
        inner = launch.sandbox.wrap(["/bin/sh", "-c", launch.command], env=env, mounts=mounts, workdir=launch.workdir)
        with launch.log_path.open("ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", WRAPPER, "mlgate-job", str(launch.exit_status_path), *inner.argv],
                cwd=launch.workdir,
                env=inner.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started = start_time(process.pid)
        handle = f"{process.pid}:{started}" if started else str(process.pid)
        with self._lock:
            self._processes[handle] = process
        return handle

    def poll(self, handle: str) -> JobOutcome:
        with self._lock:
            process = self._processes.get(handle)
        if process is None:  # started by an earlier server: all we can tell is whether it still runs
            return JobOutcome(running=True) if handle_alive(handle) else JobOutcome(running=False, exit_code=None)
        code = process.poll()
        if code is None:
            return JobOutcome(running=True)
        with self._lock:
            self._processes.pop(handle, None)
        return JobOutcome(running=False, exit_code=code)

    def cancel(self, handle: str) -> None:
        """SIGTERM to the job's process group, SIGKILL to what is left after a grace period."""
        pid, _ = parse_handle(handle)
        with self._lock:
            process = self._processes.pop(handle, None)
        if process is None and not handle_alive(handle):
            return  # ended already, or the pid is someone else's now: signal nothing
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=CANCEL_GRACE_S)
        else:
            deadline = time.monotonic() + CANCEL_GRACE_S
            while handle_alive(handle) and time.monotonic() < deadline:
                time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=CANCEL_GRACE_S)  # reap it: no zombie left behind
