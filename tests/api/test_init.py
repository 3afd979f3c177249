"""`mlgate init`, `mlgate server` and `mlgate stop` as a new user runs them, in an empty folder."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.adapters.mlflow.tracking_servers import kill_group
from mlgate.config import default_config_text, load_settings
from mlgate.runtime import alive
from tests.support.project import MLGATE, Project

ENVS = ("dev", "staging", "production")
TOKEN = re.compile(r"mlg_[A-Za-z0-9_-]{40,}")
START_TIMEOUT_S = 120.0


def test_init_then_server_then_stop(tmp_path: Path) -> None:
    folder = tmp_path / "newproject"
    folder.mkdir()
    user = Project(folder)

    # --- init: the config, the home, the first admin's token printed once
    first = user.run("init")
    assert first.returncode == 0, first.stderr
    config = folder / "mlgate.yaml"
    assert config.read_text() == default_config_text()
    assert sum(line.startswith("#") for line in config.read_text().splitlines()) >= 3
    home = folder / ".mlgate"
    assert (home / "control.db").is_file()
    for env in ENVS:
        assert (home / "envs" / env / "mlflow.db").is_file()
        for sub in ("artifacts", "data", "serving", "monitoring"):
            assert (home / "envs" / env / sub).is_dir(), f"{env}/{sub}"
    assert_private(home)
    assert "tightened" not in first.stdout  # created private: nothing to tighten
    tokens = TOKEN.findall(first.stdout)
    assert len(tokens) == 1, first.stdout
    admin = tokens[0]
    assert first.stdout.count(admin) == 1
    assert admin not in first.stderr

    # --- a second run changes nothing and shows no token
    again = user.run("init")
    assert again.returncode == 0, again.stderr
    assert "already initialized: nothing to do" in again.stdout
    assert "mlg_" not in again.stdout + again.stderr
    again_json = user.run("init", "--json")
    assert again_json.returncode == 0, again_json.stderr
    report = json.loads(again_json.stdout)
    assert report == {
        "config": str(config.resolve()),
        "home": str(home.resolve()),
        "wrote_config": False,
        "created": [],
        "admin_token": None,
        "tightened": 0,
    }

    # --- the token is stored only as its hash, anywhere under the home (WAL files included)
    stored = b"".join(path.read_bytes() for path in sorted(home.rglob("*")) if path.is_file())
    stored += config.read_bytes()
    assert admin.encode() not in stored
    assert hashlib.sha256(admin.encode()).hexdigest().encode() in stored  # the search did see the table

    # --- server in the folder; the CLI finds it through the home's server.json
    assert user.run("stop").stdout.strip() == "no server is running for this home"
    with running_server(folder) as (url, record):
        assert url == record["url"]
        assert record["children"] == []  # a tracking server starts at its environment's first use
        used = httpx.post(
            f"{url}/mlflow/dev/api/2.0/mlflow/experiments/search",
            json={"max_results": 1},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=120,
        )
        assert used.status_code == 200, used.text
        record = json.loads((home / "server.json").read_text())
        assert len(record["children"]) == 1  # dev's, recorded as it started
        assert all(alive(pid) for pid in [record["pid"], *record["children"]])
        assert_private(home)  # what the server and its tracking server wrote too

        me = user.run("whoami", token=admin)
        assert me.returncode == 0, me.stderr
        assert me.stdout.strip().startswith("admin: admin @ *")
        envs = user.run("env", "list", "--json", token=admin)
        assert envs.returncode == 0, envs.stderr
        listed = json.loads(envs.stdout)
        assert [e["name"] for e in listed] == list(ENVS)
        for env in listed:
            assert env["tracking_uri"] == f"{url}/mlflow/{env['name']}/"

        second = user.run("server", "--port", "0")
        assert second.returncode == 1
        assert second.stderr.startswith(f"error: a server of this home already runs at {url}")
        assert f"pid {record['pid']}" in second.stderr
        assert "Traceback" not in second.stderr

        stopped = user.run("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped server (pid {record['pid']}) at {url}" in stopped.stdout
        assert not (home / "server.json").exists()
        assert not alive(record["pid"])
        for pid in record["children"]:
            assert not alive(pid), f"tracking server {pid} outlived `mlgate stop`"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/api/v1/health", timeout=2)

    gone = user.run("whoami", token=admin)
    assert gone.returncode == 1
    assert "no mlgate server found" in gone.stderr


def assert_private(home: Path) -> None:
    """Nothing under the home (itself included) is open to group or others; symlinks are not followed.
    A Unix socket's own mode is whatever its server set (uvicorn makes them 0666): the 0700 folder it is
    in is what keeps others out, so that folder is checked instead."""
    shared = [
        f"{path}: {oct(path.lstat().st_mode & 0o777)}"
        for path in [home, *home.rglob("*")]
        if not path.is_symlink() and not path.is_socket() and path.lstat().st_mode & 0o077
    ]
    assert shared == [], shared
    assert home.stat().st_mode & 0o777 == 0o700
    assert all(path.parent.stat().st_mode & 0o077 == 0 for path in home.rglob("*") if path.is_socket())


def _as_nobody(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *args], capture_output=True, check=False)


def test_init_tightens_a_loosened_home_and_then_nobody_else_reads_it(project_template: Project) -> None:
    # Under /tmp rather than pytest's private folder, so another user is kept out by the home alone.
    folder = Path(tempfile.mkdtemp(prefix="mlgate-private-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        user = project_template.copy(folder / "project")
        home = user.settings.home
        (home / "outside-link").symlink_to("/etc/hostname")  # a symlink is never followed
        loosened = 0
        for path in [folder / "project", home, *home.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o077)
                loosened += path != folder / "project"
        can_check = shutil.which("runuser") is not None and os.geteuid() == 0
        if can_check:  # the check below is meaningful: loosened, another user reads the database
            assert _as_nobody("cat", str(home / "control.db")).returncode == 0

        done = user.run("init")
        assert done.returncode == 0, done.stderr
        said = f"tightened permissions of {loosened} files and folders under {home.resolve()}: group and others"
        assert said in " ".join(done.stdout.split())
        assert "already initialized" not in done.stdout
        assert_private(home)
        assert Path("/etc/hostname").stat().st_mode & 0o077  # the symlink's target was left alone
        if can_check:
            refused = _as_nobody("cat", str(home / "control.db"))
            assert refused.returncode != 0 and b"Permission denied" in refused.stderr
        again = user.run("init", "--json")
        assert json.loads(again.stdout)["tightened"] == 0
    finally:
        shutil.rmtree(folder)


@contextmanager
def running_server(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """`mlgate server --port 0` in the background, until server.json names it and it answers.

    On the way out, whatever the test did, nothing it started is left running.
    """
    server_json = load_settings(folder / "mlgate.yaml").server_json
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
    log = folder / "server.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [MLGATE, "server", "--port", "0"],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    record: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (record and healthy(record["url"])):
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in time")
            if not record and server_json.exists():
                record = json.loads(server_json.read_text())
            time.sleep(0.3)
        yield record["url"], record
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in record.get("children", []):
            if alive(pid):
                kill_group(pid)
    # uvicorn shuts down gracefully on SIGTERM, then exits by that signal again
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_server_without_a_config_says_to_run_init(tmp_path: Path) -> None:
    result = Project(tmp_path).run("server", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: no mlgate.yaml here or in any parent folder; run `mlgate init` to create one"
    )


def test_server_with_a_config_but_no_home_says_to_run_init(tmp_path: Path) -> None:
    (tmp_path / "mlgate.yaml").write_text(default_config_text())
    result = Project(tmp_path).run("server", "--port", "0")
    assert result.returncode == 1
    assert "is not initialized: run `mlgate init` first" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(autouse=True)
def _no_stray_config_above(tmp_path: Path) -> Iterator[None]:
    """These tests rely on no mlgate.yaml in the folders above the temporary one."""
    assert not [p for p in tmp_path.parents if (p / "mlgate.yaml").exists()]
    yield
