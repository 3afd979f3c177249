"""The job runner: a server thread that prepares queued jobs, launches them on the execution backend,
watches them (exit, timeout, cancellation) and records how they ended.

A job's folder holds its code (the snapshot, unpacked), its data (materialized from the data store)
and its log. The job gets a short-lived token good only for its environment's MLflow door, revoked
when the job ends; it holds no other credential.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from mlgate.adapters.execution.base import ExecutionBackend, JobLaunch
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Job, utcnow
from mlgate.config import Settings
from mlgate.domain.jobs import DataRef, JobState, render_command
from mlgate.errors import MlgateError
from mlgate.services import audit, data_assets, identity, jobs
from mlgate.snapshot import extract

log = logging.getLogger(__name__)

TICK_S = 0.5
TOKEN_GRACE = timedelta(minutes=10)
VENV_BUILD_TIMEOUT_S = 1800


def _aware(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


class JobRunner:
    def __init__(self, *, settings: Settings, db: Database, backend: ExecutionBackend, base_url: str) -> None:
        self.settings = settings
        self.db = db
        self.backend = backend
        self.base_url = base_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._preparing: set[int] = set()
        self._venv_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # the runner must outlive any one bad job
                log.exception("job runner tick failed")

    # -- one pass ------------------------------------------------------------------------------

    def tick(self) -> None:
        with self.db.read() as session:
            rows = session.execute(
                select(Job.id, Job.state).where(
                    Job.backend == self.backend.name,
                    Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
                )
            ).all()
        for job_id, state in rows:
            if job_id in self._preparing:
                continue
            if state == JobState.QUEUED.value:
                self._preparing.add(job_id)
                threading.Thread(target=self._launch, args=(job_id,), daemon=True).start()
            else:
                self._watch(job_id)

    def _launch(self, job_id: int) -> None:
        try:
            with self.db.write() as session:
                job = session.get(Job, job_id)
                if job is None or job.state != JobState.QUEUED.value:
                    return
                job.state, job.started_at = JobState.RUNNING.value, utcnow()
                env_name, user, snapshot_sha = (
                    job.environment,
                    job.requested_by,
                    job.snapshot.sha256 if job.snapshot else None,
                )
                spec, pinned, timeout_s = dict(job.spec), dict(job.data_versions), job.timeout_s
                audit.record(session, actor="system", action="job.start", environment=env_name, subject=f"job:{job_id}")
            folder = jobs.job_dir(self.settings, job_id)
            work = folder / "work"
            logfile = jobs.log_path(self.settings, job_id)
            folder.mkdir(parents=True, exist_ok=True)
            self._note(logfile, f"job {job_id}: preparing {work}")
            if snapshot_sha:
                extract(jobs.snapshot_path(self.settings, snapshot_sha).read_bytes(), work)
            env = self.settings.environment(env_name)
            paths = {}
            for name, version in pinned.items():
                asset = data_assets.resolve(self.db, env_name, DataRef(name, int(version)))
                paths[name] = str(data_assets.materialize(env, asset, work / "data" / name))
                self._note(
                    logfile,
                    f"data {asset.ref} ({asset.rows} rows, sha256 {asset.sha256[:12]}) -> {paths[name]}",
                )
            command = render_command(str(spec["command"]), paths)
            python_bin = self._python_bin(spec, work, logfile)
            token = identity.mint_job_token(
                self.db,
                job_id=job_id,
                user_name=user,
                environment=env_name,
                ttl=timedelta(seconds=timeout_s) + TOKEN_GRACE,
            )
            launch = JobLaunch(
                job_id=job_id,
                command=command,
                workdir=work,
                env=self._environment(work, env_name, token, job_id),
                log_path=logfile,
                python_bin=python_bin,
            )
            self._note(logfile, f"$ {command}")
            handle = self.backend.submit(launch)
            with self.db.write() as session:
                job = session.get(Job, job_id)
                assert job is not None
                job.handle, job.command = handle, command
        except Exception as exc:  # a job that cannot start fails, with the reason in its log
            reason = exc.message if isinstance(exc, MlgateError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, MlgateError):
                log.exception("job %s could not start", job_id)
            self._note(jobs.log_path(self.settings, job_id), f"job {job_id} could not start: {reason}")
            self._finish(job_id, JobState.FAILED, exit_code=None, error=f"could not start: {reason}")
        finally:
            self._preparing.discard(job_id)

    def _watch(self, job_id: int) -> None:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            if job is None or job.handle is None:
                return
            handle, cancel, started, timeout_s = (
                job.handle,
                job.cancel_requested,
                job.started_at,
                job.timeout_s,
            )
        if cancel:
            self.backend.cancel(handle)
            self._finish(job_id, JobState.CANCELLED, exit_code=None, error="cancelled")
            return
        if started is not None and utcnow() - _aware(started) > timedelta(seconds=timeout_s):
            self.backend.cancel(handle)
            minutes = timeout_s / 60
            self._note(jobs.log_path(self.settings, job_id), f"job {job_id} timed out after {minutes:g} minutes")
            self._finish(job_id, JobState.FAILED, exit_code=None, error=f"timed out after {minutes:g} minutes")
            return
        outcome = self.backend.poll(handle)
        if outcome.running:
            return
        if outcome.exit_code == 0:
            self._finish(job_id, JobState.SUCCEEDED, exit_code=0, error=None)
        elif outcome.exit_code is None:
            self._finish(
                job_id,
                JobState.FAILED,
                exit_code=None,
                error="lost: the job's process ended while the server was down",
            )
        else:
            self._finish(
                job_id,
                JobState.FAILED,
                exit_code=outcome.exit_code,
                error=f"exited with code {outcome.exit_code}",
            )

    def _finish(self, job_id: int, state: JobState, *, exit_code: int | None, error: str | None) -> None:
        with self.db.write() as session:
            job = session.get(Job, job_id)
            if job is None or JobState(job.state).finished:
                return
            job.state, job.exit_code, job.error, job.finished_at = state.value, exit_code, error, utcnow()
            audit.record(
                session,
                actor="system",
                action=f"job.{state.value}",
                environment=job.environment,
                subject=f"job:{job_id}",
                payload={"exit_code": exit_code, "error": error, "run_ids": job.run_ids},
            )
        identity.revoke_job_tokens(self.db, job_id=job_id)

    # -- the job's surroundings ----------------------------------------------------------------

    def _environment(self, work: Path, env_name: str, token: str, job_id: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
        python_path = [str(work / "src"), str(work)] if (work / "src").is_dir() else [str(work)]
        env.update(
            {
                "MLFLOW_TRACKING_URI": f"{self.base_url}/mlflow/{env_name}",
                "MLFLOW_TRACKING_TOKEN": token,
                "MLGATE_JOB_ID": str(job_id),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(python_path),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', os.defpath)}",
            }
        )
        return env

    def _python_bin(self, spec: dict[str, object], work: Path, logfile: Path) -> Path | None:
        """None for `environment: inherit` (the server's Python); a cached venv's bin/ for `venv`."""
        if spec.get("environment") != "venv":
            return None
        requirements = work / str(spec.get("requirements") or "requirements.txt")
        if not requirements.is_file():
            raise MlgateError(f"environment: venv needs {requirements.name} in the project, and it has none")
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
        venv = self.settings.home / "venvs" / digest
        with self._venv_lock:  # one build per requirements digest, reused by every later job
            if (venv / ".complete").exists():
                self._note(logfile, f"reusing environment {venv.name[:12]} for {requirements.name}")
                return venv / "bin"
            self._note(logfile, f"building environment {venv.name[:12]} from {requirements.name}")
            shutil.rmtree(venv, ignore_errors=True)
            with logfile.open("ab") as out:
                for command in (
                    [sys.executable, "-m", "venv", str(venv)],
                    [
                        str(venv / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "-r",
                        str(requirements),
                    ],
                ):
                    done = subprocess.run(
                        command,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=VENV_BUILD_TIMEOUT_S,
                        check=False,
                    )
                    if done.returncode != 0:
                        shutil.rmtree(venv, ignore_errors=True)
                        raise MlgateError(f"building the job's environment failed: {' '.join(command[-3:])}")
            (venv / ".complete").write_text(digest)
        return venv / "bin"

    @staticmethod
    def _note(logfile: Path, line: str) -> None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with logfile.open("a") as out:
            out.write(f"[mlgate] {line}\n")
