"""The job runner: a server thread that prepares queued jobs, launches them on the execution backend,
watches them (exit, timeout, cancellation) and records how they ended.

A job's folder holds its code (the snapshot, unpacked), its data (materialized from the data store)
and its log. The job gets a short-lived token good only for its environment's MLflow door, revoked
when the job ends; it holds no other credential.

Preparing a job (unpacking, copying data, perhaps building a virtual environment) can take minutes,
so each queued job is prepared on a thread of its own while the runner thread goes on watching the
others. A job the runner finds `running` with no handle and no preparation under way here was being
prepared by a server that stopped: it is failed as lost, never left running forever.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mlgate import sandbox as sandboxes
from mlgate.adapters.execution.base import EXIT_STATUS_FILE, ExecutionBackend, JobLaunch
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Job, utcnow
from mlgate.adapters.sql.queries import as_utc
from mlgate.archives import extract
from mlgate.config import Settings
from mlgate.domain.events import JobEnded
from mlgate.domain.jobs import DataRef, JobState, render_command
from mlgate.domain.permissions import SYSTEM, Role
from mlgate.errors import MlgateError
from mlgate.sandbox import Mount
from mlgate.services import audit
from mlgate.services.events import NO_EVENTS, Publisher
from mlgate.services.identity import accounts
from mlgate.services.training import data_assets, jobs
from mlgate.services.worker import Worker
from mlgate.snapshot import SNAPSHOT_CAPS

log = logging.getLogger(__name__)

TICK_S = 0.5
DEFAULT_MAX_CONCURRENT_JOBS = 4  # on one machine, more training processes than this only queue for the CPU
# What a job inherits of the server's environment: locale and the numeric libraries' tuning, nothing
# that can hold a credential (PIP_* index URLs, database URLs, SMTP passwords, cloud keys).
INHERITED_VARIABLES = frozenset({"LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE"})
INHERITED_PREFIXES = ("LC_", "OPENBLAS_", "OMP_", "MKL_")
# Building a job's venv runs pip, which needs the index configuration; it runs sandboxed too.
BUILD_PREFIXES = ("PIP_",)
BUILD_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
TOKEN_GRACE = timedelta(minutes=10)
VENV_BUILD_TIMEOUT_S = 1800
STOP_WAIT_S = 10.0


def _exit_error(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exited with code {code}"


def _inherited(prefixes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in INHERITED_VARIABLES or k.startswith(prefixes)}


class _Stopping(Exception):
    """The server is stopping: a job still being prepared is not started."""


@dataclass(frozen=True)
class _Claimed:
    """What preparing a job needs of its record, read when it was moved to `running`."""

    environment: str
    requested_by: str
    snapshot_sha256: str | None
    spec: dict[str, Any]
    data_versions: dict[str, Any]
    timeout_s: float


class JobRunner(Worker):
    """Prepares queued jobs, launches them on the execution backend, follows them to their end."""

    name = "job-runner"
    interval_s = TICK_S
    stop_wait_s = STOP_WAIT_S

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        backend: ExecutionBackend,
        base_url: str,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT_JOBS,
        events: Publisher = NO_EVENTS,
    ) -> None:
        self.settings = settings
        self.events = events
        self.max_concurrent = max_concurrent
        self.db = db
        self.backend = backend
        self.base_url = base_url
        super().__init__()
        # Jobs being prepared, each by its own thread; guarded by _lock (tick adds, the threads remove).
        self._preparing: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        self._venv_locks: dict[str, threading.Lock] = {}
        self.sandbox = sandboxes.from_settings(settings)

    # -- lifecycle -----------------------------------------------------------------------------

    def stopped(self) -> None:
        self.drain(timeout=STOP_WAIT_S)

    def drain(self, timeout: float | None = None) -> None:
        """Wait until the jobs being prepared have been launched or have failed to."""
        with self._lock:
            threads = list(self._preparing.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- one pass ------------------------------------------------------------------------------

    def tick(self) -> None:
        with self.db.read() as session:
            rows = session.execute(
                select(Job.id, Job.state).where(
                    Job.backend == self.backend.name,
                    Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
                )
            ).all()
        # Jobs past the concurrency limit stay queued, oldest first, until a running one ends.
        slots = self.max_concurrent - sum(1 for _, state in rows if state == JobState.RUNNING.value)
        for job_id, state in sorted(rows):
            with self._lock:
                if job_id in self._preparing:
                    continue
                if state == JobState.QUEUED.value:
                    if slots <= 0:
                        continue
                    slots -= 1
                    thread = threading.Thread(target=self._launch, args=(job_id,), name=f"job-{job_id}", daemon=True)
                    self._preparing[job_id] = thread
                    thread.start()
                    continue
            try:
                self._watch(job_id)
            except Exception:  # one job's trouble must not keep the others from being watched
                log.exception("watching job %s failed", job_id)

    def _launch(self, job_id: int) -> None:
        """Claim a queued job, prepare its folder, start it on the backend; on its preparation's thread."""
        handle: str | None = None
        try:
            claimed = self._mark_running(job_id)
            if claimed is None:
                return  # cancelled meanwhile, or launched by an earlier pass
            launch = self._prepare(job_id, claimed)
            if launch is None:
                return  # cancelled while it was being prepared
            self._note(launch.log_path, f"$ {launch.command}")
            handle = self.backend.submit(launch)
            with self.db.write() as session:
                job = session.get(Job, job_id)
                assert job is not None
                # The timeout counts from here: preparing (a first venv build, say) is not the command's time.
                job.handle, job.command, job.started_at = handle, launch.command, utcnow()
        except Exception as exc:  # a job that cannot start fails, with the reason in its log
            self._could_not_start(job_id, exc, handle=handle)
        finally:
            with self._lock:
                self._preparing.pop(job_id, None)

    def _mark_running(self, job_id: int) -> _Claimed | None:
        """A queued job moved to `running` (and how it runs, recorded); None if it is no longer queued."""
        with self.db.write() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.QUEUED.value:
                return None
            job.state, job.started_at = JobState.RUNNING.value, utcnow()
            job.spec = {**job.spec, "sandbox": self.sandbox.mode}  # the job's record shows how it ran
            audit.record(
                session, actor=SYSTEM, action="job.start", environment=job.environment, subject=f"job:{job_id}"
            )
            return _Claimed(
                environment=job.environment,
                requested_by=job.requested_by,
                snapshot_sha256=job.snapshot.sha256 if job.snapshot else None,
                spec=dict(job.spec),
                data_versions=dict(job.data_versions),
                timeout_s=job.timeout_s,
            )

    def _prepare(self, job_id: int, job: _Claimed) -> JobLaunch | None:
        """The job's folder laid out (code, data, venv) and its launch built; None if it was cancelled."""
        folder = jobs.job_dir(self.settings, job_id)
        work = folder / "work"
        logfile = jobs.log_path(self.settings, job_id)
        folder.mkdir(parents=True, exist_ok=True)
        self._note(logfile, f"job {job_id}: preparing {work}")
        self.sandbox.check()  # a sandbox that cannot be made refuses the job, naming what is missing
        if not self.sandbox.isolated:
            self._note(logfile, "execution.sandbox is 'none': this job runs with the server's powers")
        if job.snapshot_sha256:
            with jobs.snapshot_path(self.settings, job.snapshot_sha256).open("rb") as snapshot:
                extract(snapshot, work, what="code snapshot", caps=SNAPSHOT_CAPS)
        paths = self._materialize(job, work, logfile)
        command = render_command(str(job.spec["command"]), paths)
        python_bin = self._python_bin(job.spec, work, logfile)
        if self._stop.is_set():
            raise _Stopping
        if self._cancel_requested(job_id):
            self._note(logfile, f"job {job_id} cancelled before it started")
            self._finish(job_id, JobState.CANCELLED, exit_code=None, error=None)
            return None
        token = accounts.mint_job_token(
            self.db,
            job_id=job_id,
            user_name=job.requested_by,
            environment=job.environment,
            ttl=timedelta(seconds=job.timeout_s) + TOKEN_GRACE,
            role=Role(job.spec["acts_as"]) if job.spec.get("acts_as") else None,
        )
        return JobLaunch(
            job_id=job_id,
            command=command,
            workdir=work,
            env=self._environment(work, job.environment, token, job_id),
            log_path=logfile,
            sandbox=self.sandbox,
            python_bin=python_bin,
            mounts=(Mount(python_bin.parent),) if python_bin is not None else (),
        )

    def _materialize(self, job: _Claimed, work: Path, logfile: Path) -> dict[str, str]:
        """The job's pinned data versions copied under work/data/; where each one is, by name."""
        env = self.settings.environment(job.environment)
        paths = {}
        for name, version in job.data_versions.items():
            asset = data_assets.resolve(self.db, job.environment, DataRef(name, int(version)))
            paths[name] = str(data_assets.materialize(env, asset, work / "data" / name))
            self._note(logfile, f"data {asset.ref} ({asset.rows} rows, sha256 {asset.sha256[:12]}) -> {paths[name]}")
        return paths

    def _could_not_start(self, job_id: int, exc: Exception, *, handle: str | None) -> None:
        """Fail a job that could not start, with the reason in its log (and stop it if it did start)."""
        if isinstance(exc, _Stopping):
            reason = "the server stopped while the job was being prepared; submit it again"
        elif isinstance(exc, MlgateError):
            reason = exc.message
        else:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("job %s could not start", job_id, exc_info=exc)
        if handle is not None:  # started, but not recorded: stop it rather than leave it unwatched
            self.backend.cancel(handle)
        self._note(jobs.log_path(self.settings, job_id), f"job {job_id} could not start: {reason}")
        self._finish(job_id, JobState.FAILED, exit_code=None, error=f"could not start: {reason}")

    def _cancel_requested(self, job_id: int) -> bool:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            return job is None or bool(job.cancel_requested)

    def _watch(self, job_id: int) -> None:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.RUNNING.value:
                return
            handle, cancel, started, timeout_s = (job.handle, job.cancel_requested, job.started_at, job.timeout_s)
        logfile = jobs.log_path(self.settings, job_id)
        if handle is None:
            # tick() saw no preparation under way here: the server that was preparing it has stopped.
            if cancel:
                self._finish(job_id, JobState.CANCELLED, exit_code=None, error=None)
            else:
                reason = "lost: the server stopped while the job was being prepared; submit it again"
                self._note(logfile, f"job {job_id} {reason}")
                self._finish(job_id, JobState.FAILED, exit_code=None, error=reason)
            return
        outcome = self.backend.poll(handle)
        if not outcome.running:  # ended on its own (even if a cancel came in meanwhile): say how
            self._ended(job_id, outcome.exit_code)
            return
        if cancel:
            self.backend.cancel(handle)
            self._note(logfile, f"job {job_id} cancelled")
            self._finish(job_id, JobState.CANCELLED, exit_code=None, error=None)
            return
        if started is not None and utcnow() - as_utc(started) > timedelta(seconds=timeout_s):
            self.backend.cancel(handle)
            minutes = timeout_s / 60
            self._note(logfile, f"job {job_id} timed out after {minutes:g} minutes")
            self._finish(job_id, JobState.FAILED, exit_code=None, error=f"timed out after {minutes:g} minutes")

    def _ended(self, job_id: int, exit_code: int | None) -> None:
        if exit_code is None:  # a process this backend did not start: its exit status is in its folder
            exit_code = self._recorded_exit_status(job_id)
        if exit_code == 0:
            self._finish(job_id, JobState.SUCCEEDED, exit_code=0, error=None)
        elif exit_code is None:
            error = "lost: the job's process ended while the server was not watching, and left no exit status"
            self._finish(job_id, JobState.FAILED, exit_code=None, error=error)
        else:
            self._finish(job_id, JobState.FAILED, exit_code=exit_code, error=_exit_error(exit_code))

    def _recorded_exit_status(self, job_id: int) -> int | None:
        try:
            return int((jobs.job_dir(self.settings, job_id) / EXIT_STATUS_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _finish(self, job_id: int, state: JobState, *, exit_code: int | None, error: str | None) -> None:
        """Record how the job ended (once) and revoke its token. A cancelled job keeps the error its
        cancellation wrote ('cancelled by NAME'); publishes JobEnded once it is recorded."""
        ended: JobEnded | None = None
        with self.db.write() as session:
            job = session.get(Job, job_id)
            if job is not None and not JobState(job.state).finished:
                ended = JobEnded(job_id=job_id, environment=job.environment, state=state.value)
                if state is JobState.CANCELLED:
                    error = error or job.error or "cancelled"
                job.state, job.exit_code, job.error, job.finished_at = state.value, exit_code, error, utcnow()
                audit.record(
                    session,
                    actor=SYSTEM,
                    action=f"job.{state.value}",
                    environment=job.environment,
                    subject=f"job:{job_id}",
                    payload={"exit_code": exit_code, "error": error, "run_ids": job.run_ids},
                )
        # Whatever state the job was found in: a token must never outlive its job.
        accounts.revoke_job_tokens(self.db, job_id=job_id)
        if ended is not None:
            self.events.publish(ended)

    # -- the job's surroundings ----------------------------------------------------------------

    def _environment(self, work: Path, env_name: str, token: str, job_id: int) -> dict[str, str]:
        # Only what a process needs to run passes from the server to the job: never the server's own
        # credentials (database URLs, cloud keys) that may sit in its environment.
        env = _inherited(INHERITED_PREFIXES)
        python_path = [str(work / "src"), str(work)] if (work / "src").is_dir() else [str(work)]
        env.update(
            {
                "MLFLOW_TRACKING_URI": f"{self.base_url}/mlflow/{env_name}",
                "MLFLOW_TRACKING_TOKEN": token,
                "MLGATE_JOB_ID": str(job_id),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(python_path),
                "HOME": os.environ.get("HOME", str(work)),  # the sandbox gives it a HOME of its own
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{SYSTEM_PATH}",
            }
        )
        return env

    def _venv_lock(self, digest: str) -> threading.Lock:
        with self._lock:
            return self._venv_locks.setdefault(digest, threading.Lock())

    def _python_bin(self, spec: dict[str, object], work: Path, logfile: Path) -> Path | None:
        """None for `environment: inherit` (the server's Python); a cached venv's bin/ for `venv`.

        One venv per requirements file and interpreter: the same requirements on another Python
        (after an upgrade of the server's) get a venv of their own instead of a broken one.
        """
        if spec.get("environment") != "venv":
            return None
        requirements = work / str(spec.get("requirements") or "requirements.txt")
        if not requirements.resolve().is_relative_to(work.resolve()):
            raise MlgateError(f"train.requirements must name a file inside the project, not {requirements}")
        if not requirements.is_file():
            raise MlgateError(f"environment: venv needs {requirements.name} in the project, and it has none")
        digest = hashlib.sha256(requirements.read_bytes() + f"\0{sys.version}\0{sys.base_prefix}".encode()).hexdigest()
        venv = self.settings.home / "venvs" / digest
        with self._venv_lock(digest):  # one build per digest, reused by every later job
            if (venv / ".complete").exists():
                self._note(logfile, f"reusing environment {venv.name[:12]} for {requirements.name}")
                return venv / "bin"
            self._note(logfile, f"building environment {venv.name[:12]} from {requirements.name}")
            self._build_venv(venv, requirements, logfile)
            (venv / ".complete").write_text(digest)
        return venv / "bin"

    def _build_venv(self, venv: Path, requirements: Path, logfile: Path) -> None:
        """`python -m venv`, then `pip install -r`, in the sandbox: installing a package runs its code."""
        shutil.rmtree(venv, ignore_errors=True)
        venv.mkdir(parents=True)
        env = {**_inherited((*INHERITED_PREFIXES, *BUILD_PREFIXES)), "PATH": SYSTEM_PATH}
        mounts = [Mount(venv, writable=True), Mount(requirements.parent)]
        mounts += [Mount(Path(p)) for p in BUILD_CONFIG_FILES if os.path.exists(p)]
        steps = (
            ("creating the virtual environment", [sys.executable, "-m", "venv", str(venv)]),
            (
                f"pip install -r {requirements.name}",
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
            ),
        )
        for step, command in steps:
            try:
                done = self.sandbox.run(
                    command, env=env, mounts=mounts, workdir=requirements.parent, timeout_s=VENV_BUILD_TIMEOUT_S
                )
            except subprocess.TimeoutExpired:
                shutil.rmtree(venv, ignore_errors=True)
                raise MlgateError(
                    f"building the job's environment timed out ({step}, {VENV_BUILD_TIMEOUT_S // 60} minutes)"
                ) from None
            with logfile.open("ab") as out:
                out.write(done.stdout + done.stderr)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise MlgateError(f"building the job's environment failed: {step} (see the log above)")

    @staticmethod
    def _note(logfile: Path, line: str) -> None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with logfile.open("a") as out:
            out.write(f"[mlgate] {line}\n")
