"""The sandbox attacked directly: what a sandboxed command can see, keep running and use, and a job run
by a server whose OS user is unprivileged (`nobody`), as on a machine where mlgate does not run as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlgate.sandbox import Limits, Mount, Sandbox, SandboxUnavailable
from mlgate.snapshot import pack
from tests.support.project import Project, bearer, processes_named

PYTHON = sys.executable
NOBODY = 65534


@pytest.fixture
def sandbox() -> Sandbox:
    box = Sandbox("bwrap", limits=Limits(cpu_seconds=60, memory_bytes=2 << 30, processes=256))
    box.check()
    return box


def _run(box: Sandbox, script: str, work: Path, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return box.run(
        [PYTHON, "-c", textwrap.dedent(script)],
        env={"PATH": f"{Path(PYTHON).parent}:/usr/bin:/bin", "VISIBLE": "yes"},
        mounts=[Mount(work, writable=True)],
        workdir=work,
        timeout_s=60,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_sandboxed_process_sees_only_its_mounts_its_own_processes_and_its_own_environment(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLGATE_DATABASE_PASSWORD", "server-only")
    work, secret = tmp_path / "work", tmp_path / "secret"
    work.mkdir()
    secret.mkdir()
    (secret / "control.db").write_text("the server's")
    done = _run(
        sandbox,
        f"""
        import json, os
        seen = {{"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "env": dict(os.environ)}}
        try:
            seen["secret"] = open({str(secret / "control.db")!r}).read()
        except OSError as exc:
            seen["secret"] = type(exc).__name__
        seen["uid"] = os.getuid()
        open("out.json", "w").write(json.dumps(seen))
        """,
        work,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads((work / "out.json").read_text())
    assert seen["secret"] == "FileNotFoundError"
    assert max(seen["pids"]) < 10  # its own pid namespace: not the test's processes
    assert "server-only" not in seen["env"].values() and seen["env"]["VISIBLE"] == "yes"
    assert seen["env"]["HOME"] != os.environ["HOME"]
    assert seen["uid"] == NOBODY


def test_nothing_a_sandboxed_process_starts_outlives_it(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = "sleep 271828"
    done = _run(sandbox, f"import subprocess; subprocess.Popen({marker.split()!r}, start_new_session=True)", tmp_path)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 5
    while processes_named(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_named(marker) == []


def test_the_memory_cpu_and_process_limits_hold(sandbox: Sandbox, tmp_path: Path) -> None:
    hungry = _run(sandbox, "x = bytearray(3 << 30)", tmp_path)  # over the 2 GiB address space
    assert hungry.returncode != 0 and b"MemoryError" in hungry.stderr

    busy = _run(sandbox, "while True: pass", tmp_path, limits=Limits(cpu_seconds=1))
    assert busy.returncode != 0  # SIGXCPU, then SIGKILL

    # A fork bomb stops at the limit, whether the server runs as root (a pids cgroup) or not (RLIMIT_NPROC).
    forks = "import subprocess\nfor _ in range(40): subprocess.Popen(['sleep', '5'])"
    bomb = _run(sandbox, forks, tmp_path, limits=Limits(processes=20))
    assert bomb.returncode != 0 and b"BlockingIOError" in bomb.stderr


def test_a_sandbox_that_cannot_be_made_names_the_setting_and_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mlgate.sandbox.bwrap_binary", lambda: None)
    with pytest.raises(SandboxUnavailable, match=r"execution.sandbox is 'bwrap' but no bwrap binary was found"):
        Sandbox("bwrap").check()
    Sandbox("none").check()  # nothing to make


def test_jobs_are_refused_at_submit_where_no_sandbox_can_be_made(
    api: httpx.Client, project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mlgate.yaml").write_text("train:\n  command: python train.py\n")
    headers = bearer(project.tokens["dana"])
    uploaded = api.post("/api/v1/environments/dev/snapshots", content=pack(tmp_path).data, headers=headers)
    assert uploaded.status_code in (200, 201), uploaded.text
    monkeypatch.setattr("mlgate.sandbox.bwrap_binary", lambda: None)

    refused = api.post("/api/v1/environments/dev/jobs", json={"snapshot": uploaded.json()["sha256"]}, headers=headers)

    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "sandbox_unavailable"
    assert "execution.sandbox is 'bwrap' but no bwrap binary was found" in error["message"]
    assert api.get("/api/v1/environments/dev/jobs", headers=headers).json()["count"] == 0  # nothing queued


# -- the server as an unprivileged user -----------------------------------------------------------

AS_NOBODY = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from mlgate.adapters.execution.local import LocalBackend
    from mlgate.adapters.sql.database import Database
    from mlgate.config import load_settings
    from mlgate.services import audit_keys
    from mlgate.services.training import jobs
    from mlgate.services.training.job_runner import JobRunner
    from mlgate.snapshot import pack

    folder = sys.argv[1]
    settings = load_settings(Path(folder) / "mlgate.yaml")
    db = Database(settings.database_url, audit_mac_key=audit_keys.load_or_create(settings.home).mac_key)
    code = os.path.join(folder, "code")
    os.mkdir(code)
    command = (
        f"cat {settings.home}/control.db > /dev/null 2>&1 && echo READ-THE-DB || echo refused; "
        "sh -c 'sleep 314159 &'; echo trained"
    )
    with open(os.path.join(code, "mlgate.yaml"), "w") as config:
        config.write("train:\\n  command: " + json.dumps(command) + "\\n")
    stored = jobs.store_snapshot(
        db, settings, actor="dana", env="dev", data=pack(Path(code)).data, git_commit=None, git_dirty=False
    )
    job_id = jobs.submit_train(db, settings, actor="dana", env="dev", snapshot_sha256=stored.sha256, backend="local").id
    runner = JobRunner(settings=settings, db=db, backend=LocalBackend(), base_url="http://127.0.0.1:9")
    deadline = time.monotonic() + 60
    while jobs.get(db, "dev", job_id).state in ("queued", "running") and time.monotonic() < deadline:
        runner.tick()
        runner.drain(timeout=30)
        time.sleep(0.1)
    job = jobs.get(db, "dev", job_id)
    log = jobs.log_path(settings, job_id).read_text()
    print(json.dumps({"uid": os.getuid(), "state": job.state, "sandbox": job.sandbox, "log": log}))
    """
)


@pytest.fixture
def nobody_project(project: Project) -> Iterator[Path]:
    if os.getuid() != 0 or not shutil.which("runuser") or not shutil.which("unshare"):
        pytest.skip("needs root, runuser and unshare to start the server part as nobody")
    folder = Path(tempfile.mkdtemp(prefix="mlgate-nobody-", dir="/tmp"))
    shutil.copytree(project.path, folder / "project")
    for path in [folder, *folder.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    yield folder / "project"
    shutil.rmtree(folder, ignore_errors=True)


def test_a_server_running_as_nobody_sandboxes_its_jobs(nobody_project: Path) -> None:
    # The interpreter lives under root's 0700 home here: a private mount namespace lends nobody a view
    # of it (and of nothing else of /root), as a machine with a system Python would have.
    prefix, lent = Path(sys.base_prefix), nobody_project.parent / "lent"
    lend = ""
    if prefix.is_relative_to("/root"):
        lent.mkdir()
        lend = f"mount --bind {prefix} {lent} && mount -t tmpfs -o mode=755 none /root && "
        lend += f"mkdir -p {prefix} && mount --bind {lent} {prefix} && "
    script = nobody_project / "as_nobody.py"
    script.write_text(AS_NOBODY)
    os.lchown(script, NOBODY, NOBODY)
    run_as_nobody = f"runuser -u nobody -- env -i PATH=/usr/bin:/bin {PYTHON} {script} {nobody_project}"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", lend + run_as_nobody],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["uid"], result["state"], result["sandbox"]) == (NOBODY, "succeeded", "bwrap"), result
    output = result["log"].splitlines()
    assert "refused" in output and "READ-THE-DB" not in output
    assert "trained" in output
    assert processes_named("sleep 314159") == []
