"""The `local` execution backend: each job a shell subprocess in its own folder and process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading

from mlgate.adapters.execution.base import BACKENDS, JobLaunch, JobOutcome

CANCEL_GRACE_S = 5.0


class LocalBackend:
    name = "local"

    def __init__(self) -> None:
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def submit(self, launch: JobLaunch) -> str:
        env = dict(launch.env)
        if launch.python_bin is not None:
            env["PATH"] = f"{launch.python_bin}{os.pathsep}{env.get('PATH', os.defpath)}"
            env["VIRTUAL_ENV"] = str(launch.python_bin.parent)
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with launch.log_path.open("ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", launch.command],
                cwd=launch.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        handle = str(process.pid)
        with self._lock:
            self._processes[handle] = process
        return handle

    def poll(self, handle: str) -> JobOutcome:
        with self._lock:
            process = self._processes.get(handle)
        if process is None:  # started by an earlier server: all we can tell is whether it still runs
            try:
                os.kill(int(handle), 0)
            except ProcessLookupError:
                return JobOutcome(running=False, exit_code=None)
            return JobOutcome(running=True)
        code = process.poll()
        if code is None:
            return JobOutcome(running=True)
        with self._lock:
            self._processes.pop(handle, None)
        return JobOutcome(running=False, exit_code=code)

    def cancel(self, handle: str) -> None:
        pid = int(handle)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        with self._lock:
            process = self._processes.get(handle)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=CANCEL_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


BACKENDS["local"] = LocalBackend
