"""The job runner's state machine, driven tick by tick: the fake execution backend stands in for
processes, so transitions, cancellation, timeouts and restarts are tested without waiting on them.
The last tests run the `local` backend's real processes for what only they can show (process groups,
a job adopted by a later server)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlgate.adapters.execution.base import EXIT_STATUS_FILE
from mlgate.adapters.execution.fake import FakeBackend
from mlgate.adapters.execution.local import LocalBackend
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Job
from mlgate.config import Settings
from mlgate.domain.events import JobEnded
from mlgate.errors import AuthenticationError
from mlgate.services.events import Hub
from mlgate.services.identity import accounts
from mlgate.services.training import data_assets, jobs
from mlgate.services.training.job_runner import JobRunner
from mlgate.snapshot import pack, pack_data
from tests.support.project import Project

BASE_URL = "http://mlgate.test"


@dataclass
class Harness:
    settings: Settings
    db: Database
    backend: FakeBackend
    runner: JobRunner
    tmp: Path

    def submit(self, train: str, *, files: dict[str, str] | None = None, backend: str = "fake") -> int:
        """Upload a project whose mlgate.yaml holds `train` (YAML under `train:`), queue its job."""
        root = self.tmp / f"project-{len(list(self.tmp.iterdir()))}"
        root.mkdir()
        (root / "mlgate.yaml").write_text("train:\n" + "".join(f"  {line}\n" for line in train.splitlines()))
        for name, text in (files or {}).items():
            (root / name).write_text(text)
        snapshot = pack(root)
        stored = jobs.store_snapshot(
            self.db, self.settings, actor="dana", env="dev", data=snapshot.data, git_commit=None, git_dirty=False
        )
        return jobs.submit_train(
            self.db, self.settings, actor="dana", env="dev", snapshot_sha256=stored.sha256, backend=backend
        ).id

    def step(self, runner: JobRunner | None = None) -> None:
        """One pass of the runner, and the preparations it started carried through."""
        runner = runner or self.runner
        runner.tick()
        runner.drain(timeout=30)

    def job(self, job_id: int) -> jobs.JobView:
        return jobs.get(self.db, "dev", job_id)

    def handle(self, job_id: int) -> str:
        with self.db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None and job.handle is not None
            return job.handle

    def log(self, job_id: int) -> str:
        return jobs.log_path(self.settings, job_id).read_text()


@pytest.fixture
def harness(project: Project, tmp_path: Path) -> Iterator[Harness]:
    settings = project.settings
    db = project.db()
    backend = FakeBackend()
    runner = JobRunner(settings=settings, db=db, backend=backend, base_url=BASE_URL)
    (tmp_path / "projects").mkdir()
    yield Harness(settings, db, backend, runner, tmp_path / "projects")
    runner.stop()
    db.dispose()


def test_a_job_runs_with_its_data_and_a_token_for_its_own_mlflow_door_revoked_when_it_ends(
    harness: Harness, tmp_path: Path
) -> None:
    csv = tmp_path / "clinic extract" / "my patients.csv"  # spaces: the path must reach the command as one word
    csv.parent.mkdir()
    csv.write_text("age,diabetic\n50,1\n30,0\n")
    asset, _ = data_assets.register(
        harness.db,
        harness.settings.environment("dev"),
        actor="dana",
        name="patients",
        archive=pack_data(csv, limit=1 << 20),
    )
    job_id = harness.submit("command: python train.py --data ${data.patients}\ndata: [patients]")
    assert harness.job(job_id).state == "queued"
    assert harness.job(job_id).data_versions == {"patients": asset.version}

    harness.step()

    job = harness.job(job_id)
    assert job.state == "running"
    launch = harness.backend.launched[harness.handle(job_id)]
    materialized = launch.workdir / "data" / "patients" / "my patients.csv"
    assert launch.command == f"python train.py --data '{materialized}'"
    assert materialized.read_bytes() == csv.read_bytes()
    assert (launch.workdir / "mlgate.yaml").is_file()
    assert launch.env["MLFLOW_TRACKING_URI"] == f"{BASE_URL}/mlflow/dev"
    token = launch.env["MLFLOW_TRACKING_TOKEN"]
    principal = accounts.authenticate(harness.db, token)
    assert (principal.name, principal.scope, principal.job_id) == ("dana", "mlflow:dev", job_id)
    assert not any(key.startswith("MLGATE_") and key != "MLGATE_JOB_ID" for key in launch.env)

    harness.backend.finish(harness.handle(job_id), 0, log="trained\n")
    harness.step()

    job = harness.job(job_id)
    assert (job.state, job.exit_code, job.error) == ("succeeded", 0, None)
    assert job.finished_at is not None
    with pytest.raises(AuthenticationError, match="revoked"):
        accounts.authenticate(harness.db, token)
    assert token not in harness.log(job_id)
    assert "trained" in harness.log(job_id)


def test_a_failing_command_records_its_exit_code(harness: Harness) -> None:
    job_id = harness.submit("command: python -c 'raise SystemExit(3)'")
    harness.step()
    harness.backend.finish(harness.handle(job_id), 3, log="boom\n")
    harness.step()

    job = harness.job(job_id)
    assert (job.state, job.exit_code, job.error) == ("failed", 3, "exited with code 3")


def test_each_job_end_is_published_once(harness: Harness) -> None:
    hub, ended = Hub(), []
    hub.subscribe(JobEnded, ended.append)
    harness.runner = JobRunner(
        settings=harness.settings, db=harness.db, backend=harness.backend, base_url=BASE_URL, events=hub
    )
    good, bad = harness.submit("command: python train.py"), harness.submit("command: python train.py")
    harness.step()
    assert ended == []  # running: nothing ended yet
    harness.backend.finish(harness.handle(good), 0, log="")
    harness.backend.finish(harness.handle(bad), 2, log="")
    harness.step()
    harness.step()  # seen again: already recorded, not published again
    assert sorted(ended, key=lambda e: e.job_id) == [
        JobEnded(job_id=good, environment="dev", state="succeeded"),
        JobEnded(job_id=bad, environment="dev", state="failed"),
    ]


def test_cancelling_a_running_job_stops_it_and_revokes_its_token(harness: Harness) -> None:
    job_id = harness.submit("command: sleep 600")
    harness.step()
    handle = harness.handle(job_id)
    token = harness.backend.launched[handle].env["MLFLOW_TRACKING_TOKEN"]

    assert jobs.cancel(harness.db, actor="lee", env="dev", job_id=job_id).state == "running"  # until the runner acts
    harness.step()

    job = harness.job(job_id)
    assert (job.state, job.error) == ("cancelled", "cancelled by lee")
    assert handle in harness.backend.cancelled
    assert "cancelled" in harness.log(job_id)
    with pytest.raises(AuthenticationError):
        accounts.authenticate(harness.db, token)


def test_a_queued_job_is_cancelled_at_once_and_never_started(harness: Harness) -> None:
    job_id = harness.submit("command: sleep 600")
    job = jobs.cancel(harness.db, actor="dana", env="dev", job_id=job_id)
    assert (job.state, job.error) == ("cancelled", "cancelled by dana")

    harness.step()

    assert harness.job(job_id).state == "cancelled"
    assert harness.backend.launched == {}


def test_a_cancel_during_preparation_keeps_the_command_from_starting(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = harness.submit("command: sleep 600")
    prepare = harness.runner._python_bin

    def cancelled_meanwhile(*args: object, **kwargs: object) -> Path | None:
        jobs.cancel(harness.db, actor="dana", env="dev", job_id=job_id)
        return prepare(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(harness.runner, "_python_bin", cancelled_meanwhile)
    harness.step()

    assert harness.job(job_id).state == "cancelled"
    assert harness.backend.launched == {}


def test_a_job_past_its_timeout_is_stopped_and_failed(harness: Harness) -> None:
    job_id = harness.submit("command: sleep 600\ntimeout_minutes: 0.001")  # 60 ms
    harness.step()
    handle = harness.handle(job_id)
    time.sleep(0.1)
    harness.step()

    job = harness.job(job_id)
    assert (job.state, job.exit_code) == ("failed", None)
    assert job.error == "timed out after 0.001 minutes"
    assert handle in harness.backend.cancelled
    assert "timed out" in harness.log(job_id)


def test_a_job_that_cannot_start_fails_with_the_reason_in_its_log(harness: Harness) -> None:
    job_id = harness.submit("command: python -c 'import six'\nenvironment: venv")  # and no requirements.txt

    harness.step()

    job = harness.job(job_id)
    assert job.state == "failed"
    assert job.error == "could not start: environment: venv needs requirements.txt in the project, and it has none"
    assert "could not start" in harness.log(job_id)
    assert harness.backend.launched == {}


def test_a_job_left_preparing_by_a_stopped_server_is_failed_not_left_running(harness: Harness) -> None:
    job_id = harness.submit("command: sleep 600")
    with harness.db.write() as session:  # what a server that died mid-preparation leaves behind
        job = session.get(Job, job_id)
        assert job is not None
        job.state = "running"

    harness.step()

    job_view = harness.job(job_id)
    assert job_view.state == "failed"
    assert job_view.error is not None and job_view.error.startswith("lost: the server stopped")


def test_a_job_that_ended_unseen_takes_its_recorded_exit_status(harness: Harness) -> None:
    finished, vanished = harness.submit("command: 'true'"), harness.submit("command: 'false'")
    harness.step()
    for job_id in (finished, vanished):
        harness.backend.lose(harness.handle(job_id))
    (jobs.job_dir(harness.settings, finished) / EXIT_STATUS_FILE).write_text("0\n")

    harness.step()

    assert harness.job(finished).state == "succeeded"
    lost = harness.job(vanished)
    assert (lost.state, lost.exit_code) == ("failed", None)
    assert lost.error is not None and lost.error.startswith("lost:")


def test_many_queued_jobs_are_each_launched_once(harness: Harness) -> None:
    harness.runner.max_concurrent = 6
    ids = [harness.submit(f"command: echo {n}") for n in range(6)]
    for _ in range(5):  # passes that overlap the preparations
        harness.runner.tick()
    harness.runner.drain(timeout=30)
    harness.step()

    assert sorted(launch.job_id for launch in harness.backend.launched.values()) == ids
    assert {harness.job(job_id).state for job_id in ids} == {"running"}


def test_jobs_past_the_concurrency_limit_wait_their_turn(harness: Harness) -> None:
    harness.runner.max_concurrent = 2
    ids = [harness.submit(f"command: echo {n}") for n in range(4)]
    harness.step()
    assert [harness.job(i).state for i in ids] == ["running", "running", "queued", "queued"]
    harness.backend.finish(harness.handle(ids[0]), 0)
    harness.step()  # the first ends and frees its slot
    harness.step()  # the oldest waiting job takes it
    assert [harness.job(i).state for i in ids] == ["succeeded", "running", "running", "queued"]


# -- the local backend's real processes ----------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    """Whether any process (zombies aside) is left in the process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_local_cancel_stops_the_whole_process_group(harness: Harness) -> None:
    runner = JobRunner(settings=harness.settings, db=harness.db, backend=LocalBackend(), base_url=BASE_URL)
    job_id = harness.submit("command: sleep 60 & sleep 60; echo never", backend="local")
    harness.step(runner)
    pgid = int(harness.handle(job_id).split(":")[0])
    _wait_for(lambda: _group_alive(pgid))

    jobs.cancel(harness.db, actor="dana", env="dev", job_id=job_id)
    harness.step(runner)

    assert harness.job(job_id).state == "cancelled"
    _wait_for(lambda: not _group_alive(pgid), timeout=5)
    assert "never" not in harness.log(job_id).splitlines()


def test_a_local_job_outlives_a_server_restart_and_its_exit_code_is_kept(harness: Harness) -> None:
    first = LocalBackend()
    before = JobRunner(settings=harness.settings, db=harness.db, backend=first, base_url=BASE_URL)
    job_id = harness.submit("command: sleep 1; echo finished; exit 4", backend="local")
    harness.step(before)
    handle = harness.handle(job_id)

    # A new server: a new backend that did not start the process and cannot wait() for it.
    after = LocalBackend()
    restarted = JobRunner(settings=harness.settings, db=harness.db, backend=after, base_url=BASE_URL)
    harness.step(restarted)
    assert harness.job(job_id).state == "running"
    _wait_for(lambda: not after.poll(handle).running)
    harness.step(restarted)

    job = harness.job(job_id)
    assert (job.state, job.exit_code, job.error) == ("failed", 4, "exited with code 4")
    assert "finished" in harness.log(job_id)
    assert first.poll(handle).exit_code == 4  # (the first server's child, reaped: no zombie left to the test run)


def test_a_reused_pid_is_not_mistaken_for_the_job(tmp_path: Path) -> None:
    backend = LocalBackend()
    stranger = f"{os.getpid()}:1"  # our own pid, with a start time that is not ours
    assert not backend.poll(stranger).running
    backend.cancel(stranger)  # must signal nothing: this test process is still here to assert
    assert os.getpid() > 0


def test_a_job_gets_none_of_the_servers_credentials(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-only")
    monkeypatch.setenv("MLGATE_DATABASE_PASSWORD", "server-only")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    job_id = harness.submit("command: python train.py")
    harness.step()
    env = harness.backend.launched[harness.handle(job_id)].env
    assert "server-only" not in env.values()
    assert env["LC_ALL"] == "C.UTF-8"  # what a process needs to run still passes
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
