"""Training jobs through the CLI against a running server: the diabetes project trained in dev end to
end, failures, timeouts, cancellation, the job token's reach, `environment: venv`, and who may train."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlgate.interfaces.sdk.client import Client
from mlgate.snapshot import pack
from tests.support.project import MLGATE, LiveServer, Project, bearer, processes_named, start_server, stop_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"


@pytest.fixture(scope="module")
def server(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("jobs") / "project"
    live = start_server(project_template.copy(folder))
    yield live
    stop_server(live)


def git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=dana", "-c", "user.email=dana@example.com", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def diabetes(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The team's repository: the example, committed; an untracked note; data generated and registered."""
    root = tmp_path_factory.mktemp("repo") / "diabetes"
    shutil.copytree(
        EXAMPLE, root, ignore=shutil.ignore_patterns("data", "mlruns", "__pycache__", ".*_cache", ".venv", ".mlgate")
    )
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "diabetes model")
    (root / "NOTES.md").write_text("untracked, not ignored: part of the snapshot\n")
    (root / "outputs").mkdir()
    (root / "outputs" / "scratch.txt").write_text("ignored by the project's .gitignore\n")
    data = root / "data" / "diabetes.csv"  # data/ is ignored too: data travels as a data asset
    environ = {**os.environ, "PYTHONPATH": str(root / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    generate = [sys.executable, "-m", "diabetes.data", "--rows", "2000", "--out", str(data)]
    subprocess.run(generate, env=environ, check=True, capture_output=True, cwd=root)
    code, out, err = mlgate(server, "data", "register", "diabetes-train", str(data), "--env", "dev")
    assert code == 0, err
    assert "diabetes-train@1 in dev: 2000 rows" in out
    return root


def mlgate(server: LiveServer, *args: str, user: str = "dana") -> tuple[int, str, str]:
    done = server.project.run(*args, token=server.project.tokens[user])
    return done.returncode, done.stdout, done.stderr


def tiny(root: Path, train: dict[str, Any], files: dict[str, str] | None = None) -> Path:
    """A project holding only an mlgate.yaml with this `train` section (and `files`)."""
    root.mkdir(parents=True)
    (root / "mlgate.yaml").write_text(yaml.safe_dump({"train": train}))
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def job_id_of(output: str) -> int:
    match = re.search(r"job (\d+) queued in", output)
    assert match, output
    return int(match.group(1))


def show(server: LiveServer, job_id: int) -> dict[str, Any]:
    code, out, err = mlgate(server, "jobs", "show", str(job_id), "--env", "dev", "--json")
    assert code == 0, err
    job: dict[str, Any] = json.loads(out)
    return job


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def test_training_the_diabetes_project_streams_its_log_and_records_lineage(server: LiveServer, diabetes: Path) -> None:
    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(diabetes))

    assert code == 0, out + err
    assert "[mlgate] $ python -m diabetes.train --data " in out  # the log, streamed as the job ran
    assert re.search(r"Accuracy 0\.\d+  AUC 0\.\d+", out)
    job_id = job_id_of(out)
    assert f"job {job_id} succeeded; MLflow runs: " in out

    job = show(server, job_id)
    snapshot = pack(diabetes)  # the same tree packed again: the same bytes the server ran
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    assert job["snapshot_sha256"] == snapshot.sha256
    assert job["git_commit"] == git(diabetes, "rev-parse", "HEAD")
    assert job["data_versions"] == {"diabetes-train": 1}
    assert job["requested_by"] == "dana"
    assert len(job["run_ids"]) == 1
    assert job["command"].endswith("/data/diabetes-train/diabetes.csv --reg-rate 0.01")
    listing = snapshot_files(snapshot.data)
    assert "NOTES.md" in listing and "src/diabetes/train.py" in listing and "mlgate.yaml" in listing
    assert not any(name.startswith(("data/", "outputs/")) for name in listing)

    # The run is in dev, by dana, tied to the job, its code and its data.
    run = httpx.get(
        f"{server.url}/mlflow/dev/api/2.0/mlflow/runs/get",
        params={"run_id": job["run_ids"][0]},
        headers=bearer(server.project.tokens["vic"]),
    ).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run["info"]["user_id"] == "dana"
    assert tags["mlgate.job_id"] == str(job_id)
    assert tags["mlgate.snapshot_sha256"] == snapshot.sha256
    assert tags["mlgate.git_commit"] == job["git_commit"]
    assert tags["mlgate.git_dirty"] == "true"  # NOTES.md is not committed
    assert tags["mlgate.data.diabetes-train"] == "diabetes-train@1"
    assert {m["key"] for m in run["data"]["metrics"]} >= {"Accuracy", "AUC"}

    code, out, err = mlgate(server, "jobs", "logs", str(job_id), "--env", "dev")
    assert code == 0, err
    assert "[mlgate] data diabetes-train@1 (2000 rows" in out and "AUC" in out
    code, out, err = mlgate(server, "jobs", "list", "--env", "dev", "--json")
    assert code == 0, err
    assert job_id in [j["id"] for j in json.loads(out)]


def snapshot_files(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def test_no_wait_then_follow_and_cancel(server: LiveServer, tmp_path: Path) -> None:
    project = tiny(tmp_path / "sleeper", {"command": 'echo "pid $$"; sleep 120.5; echo "never printed"'})

    started = time.monotonic()
    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(project), "--no-wait", "--json")
    assert code == 0, err
    assert time.monotonic() - started < 10  # it did not wait for a two-minute job
    job = json.loads(out)
    assert job["state"] in ("queued", "running")
    job_id = job["id"]

    with Client(server.url, server.project.tokens["dana"]) as client:
        # the log's "$ echo ..." line names "pid $$" too: wait for the number the shell printed
        wait_for(lambda: re.search(r"pid \d+", client.job_log("dev", job_id)["text"]))
        pid = int(re.search(r"pid (\d+)", client.job_log("dev", job_id)["text"]).group(1))  # type: ignore[union-attr]
    assert pid < 10  # the job's shell sees its own pid namespace
    wait_for(lambda: processes_named("sleep 120.5"))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
    env["MLGATE_TOKEN"] = server.project.tokens["vic"]  # following needs only read access
    with subprocess.Popen(
        [MLGATE, "jobs", "logs", str(job_id), "--env", "dev", "--follow"],
        cwd=server.project.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        time.sleep(1.0)
        assert follower.poll() is None  # still following a running job

        code, out, err = mlgate(server, "jobs", "cancel", str(job_id), "--env", "dev")
        assert code == 0, err
        assert f"job {job_id}: running (stopping)" in out

        followed, follow_err = follower.communicate(timeout=30)
    assert follower.returncode == 0, follow_err
    assert f"pid {pid}" in followed and f"job {job_id} cancelled" in followed

    job = show(server, job_id)
    assert (job["state"], job["error"], job["exit_code"]) == ("cancelled", "cancelled by dana", None)
    wait_for(lambda: not processes_named("sleep 120.5"), timeout=10)
    code, _, err = mlgate(server, "jobs", "cancel", str(job_id), "--env", "dev")
    assert code == 1 and "409" in err and "already cancelled" in err


def test_a_failing_command_fails_the_job_with_its_log_tail_and_exit_code(server: LiveServer, tmp_path: Path) -> None:
    project = tiny(tmp_path / "boom", {"command": "python -c \"import sys; print('boom'); sys.exit(3)\""})

    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(project))

    assert code == 1
    assert "boom" in out
    assert "failed: exited with code 3" in err
    job_id = job_id_of(out)
    code, out, err = mlgate(server, "jobs", "show", str(job_id), "--env", "dev")
    assert code == 0, err
    assert "last log lines:" in out and "boom" in out.split("last log lines:")[1]
    assert "exited with code 3" in out
    job = show(server, job_id)
    assert (job["state"], job["exit_code"], job["run_ids"]) == ("failed", 3, [])
    models = httpx.get(
        f"{server.url}/mlflow/dev/api/2.0/mlflow/registered-models/search",
        headers=bearer(server.project.tokens["dana"]),
    ).json()
    assert models.get("registered_models", []) == []


def test_a_job_past_its_timeout_is_stopped(server: LiveServer, tmp_path: Path) -> None:
    project = tiny(tmp_path / "slow", {"command": "echo slow; sleep 60", "timeout_minutes": 0.05})

    started = time.monotonic()
    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(project))

    assert code == 1
    assert time.monotonic() - started < 30
    assert "timed out after 0.05 minutes" in out  # in the log
    assert "failed: timed out after 0.05 minutes" in err
    job = show(server, job_id_of(out))
    assert (job["state"], job["error"]) == ("failed", "timed out after 0.05 minutes")


def test_a_job_naming_unknown_data_is_refused_at_submit(server: LiveServer, tmp_path: Path) -> None:
    project = tiny(tmp_path / "nodata", {"command": "wc -l ${data.no-such-data}", "data": ["no-such-data"]})

    code, _, err = mlgate(server, "train", "--env", "dev", "--path", str(project))

    assert code == 1
    assert "error (404 not_found): no data asset 'no-such-data' in 'dev'" in err
    assert "mlgate data register no-such-data PATH" in err


def _upload(server: LiveServer, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/environments/dev/snapshots",
        content=data,
        headers=bearer(server.project.tokens["dana"]) | headers,
        timeout=60,
    )


def test_bad_snapshots_are_refused_with_what_is_wrong(server: LiveServer, tmp_path: Path) -> None:
    no_config = tiny(tmp_path / "a", {"command": "true"})
    (no_config / "mlgate.yaml").unlink()
    (no_config / "train.py").write_text("print(1)\n")
    refused = _upload(server, pack(no_config).data)
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] == "the code snapshot has no mlgate.yaml at its top level"

    (no_config / "mlgate.yaml").write_text("environments:\n  - name: dev\n")
    refused = _upload(server, pack(no_config).data)
    assert refused.status_code == 422
    assert "has no `train` section" in refused.json()["error"]["message"]

    (no_config / "mlgate.yaml").write_text("train:\n  comand: python train.py\n")
    refused = _upload(server, pack(no_config).data)
    assert refused.status_code == 422
    assert "train.command: Field required" in refused.json()["error"]["message"]
    assert "train.comand" in refused.json()["error"]["message"]

    (no_config / "mlgate.yaml").write_text("train:\n  command: 'true'\n  requirements: ../../etc/passwd\n")
    refused = _upload(server, pack(no_config).data)
    assert refused.status_code == 422
    assert "train.requirements: expected a file path inside the project" in refused.json()["error"]["message"]

    unsafe = tiny(tmp_path / "unsafe", {"command": "true"})
    (unsafe / "escape.py").write_text("print(1)\n")
    with tarfile.open(fileobj=io.BytesIO(pack(unsafe).data), mode="r:gz") as packed, io.BytesIO() as buffer:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for member in packed.getmembers():
                content = packed.extractfile(member)
                if member.name == "escape.py":
                    member.name = "../escape.py"
                tar.addfile(member, content)
        refused = _upload(server, buffer.getvalue())
    assert refused.status_code == 422
    assert (
        refused.json()["error"]["message"]
        == "refused code snapshot: '../escape.py' points outside the archive's folder"
    )

    # Over the size limit: refused from the announced length, before a byte of the body is read.
    address = httpx.URL(server.url)
    connection = http.client.HTTPConnection(address.host, address.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/v1/environments/dev/snapshots")
        connection.putheader("Authorization", f"Bearer {server.project.tokens['dana']}")
        connection.putheader("Content-Length", str(60 * 1024 * 1024))
        connection.endheaders()
        reply = connection.getresponse()
        assert reply.status == 413
        assert "is over the 50 MiB limit" in json.loads(reply.read())["error"]["message"]
    finally:
        connection.close()

    # And the CLI says so before uploading anything.
    big = tiny(tmp_path / "big", {"command": "true"})
    (big / "weights.bin").write_bytes(os.urandom(51 * 1024 * 1024))
    code, _, err = mlgate(server, "train", "--env", "dev", "--path", str(big))
    assert code == 1
    assert "is over the 50 MiB limit" in err and "gitignore" in err


PROBE = textwrap.dedent(
    """
    import os, sys, urllib.error, urllib.request

    uri, token = os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_TRACKING_TOKEN"]
    base = uri.rsplit("/mlflow/", 1)[0]

    def status(url):
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code

    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    print("dev", status(uri + search))
    print("staging", status(base + "/mlflow/staging" + search))
    print("whoami", status(base + "/api/v1/whoami"))
    print("jobs", status(base + "/api/v1/environments/dev/jobs"))
    with open("token.txt", "w") as kept:  # handed to the test through the job's own folder
        kept.write(token)
    """
)


def test_the_job_token_reaches_only_the_dev_door_and_dies_with_the_job(server: LiveServer, tmp_path: Path) -> None:
    project = tiny(tmp_path / "probe", {"command": "python probe.py"}, {"probe.py": PROBE})

    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(project))

    assert code == 0, out + err
    assert "dev 200" in out
    assert "staging 403" in out
    assert "whoami 403" in out
    assert "jobs 403" in out
    kept = server.project.settings.jobs_dir / str(job_id_of(out)) / "work" / "token.txt"
    token = kept.read_text()
    assert token.startswith("mlg_")

    ended = httpx.get(
        f"{server.url}/mlflow/dev/api/2.0/mlflow/experiments/search", params={"max_results": 1}, headers=bearer(token)
    )
    assert ended.status_code == 401
    assert ended.json() == {"error_code": "UNAUTHENTICATED", "message": "this token was revoked"}

    job_log = (server.project.settings.jobs_dir / str(job_id_of(out)) / "job.log").read_text()
    assert token not in job_log
    leaked = [
        path
        for path in [*server.project.settings.home.rglob("*"), server.project.path / "server.log"]
        if path.is_file() and path != kept and token.encode() in path.read_bytes()
    ]
    assert leaked == []


def test_a_venv_environment_is_built_once_and_reused(server: LiveServer, tmp_path: Path) -> None:
    command = "python -c \"import six, sys; print('prefix', sys.prefix)\""
    first = tiny(tmp_path / "venv-a", {"command": command, "environment": "venv"}, {"requirements.txt": "six\n"})
    second = tiny(
        tmp_path / "venv-b", {"command": command + " #", "environment": "venv"}, {"requirements.txt": "six\n"}
    )
    venvs = server.project.settings.home / "venvs"

    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(first))
    assert code == 0, out + err
    assert "building environment" in out and "reusing" not in out
    prefix = Path(re.search(r"prefix (\S+)", out).group(1))  # type: ignore[union-attr]
    assert prefix.parent == venvs

    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(second))
    assert code == 0, out + err
    assert "reusing environment" in out and "building" not in out
    assert f"prefix {prefix}" in out
    assert [p.name for p in venvs.iterdir()] == [prefix.name]


@pytest.mark.parametrize(
    ("user", "env"),
    [("vic", "dev"), ("olu", "staging"), ("olu", "dev"), ("dana", "staging"), ("lee", "staging")],
)
def test_only_training_roles_train_and_only_in_dev(server: LiveServer, tmp_path: Path, user: str, env: str) -> None:
    project = tiny(tmp_path / "roles", {"command": "true"})

    code, _, err = mlgate(server, "train", "--env", env, "--path", str(project), user=user)

    assert code == 1
    assert "error (403 forbidden)" in err and f"{user} may not do this" in err


HOSTILE = textwrap.dedent(
    """
    # A data scientist's training job that tries to reach past its sandbox, then trains as usual.
    import json, os, socket, subprocess, sys, urllib.request
    home, server_pid = sys.argv[1], sys.argv[2]
    tried = {}

    def attempt(name, action):
        try:
            tried[name] = f"got through: {action()!r}"[:200]
        except Exception as exc:
            tried[name] = f"refused: {type(exc).__name__}"

    secrets = ("secrets/audit-mac.key", "secrets/audit-signing.key")
    for relative in ("control.db", "web-secret", *secrets, "envs/dev/serving/host.json", "envs/production/mlflow.db"):
        attempt("read " + relative, lambda: open(os.path.join(home, relative), "rb").read(16))
    def nonempty(found):
        if not found:
            raise LookupError("nothing visible")
        return found

    here = os.getcwd()
    attempt("list the home", lambda: nonempty(
        [os.path.join(top, f) for top, _, files in os.walk(home) for f in files if not top.startswith(here)]
    ))
    attempt("write production's store", lambda: open(os.path.join(home, "envs/production/mlflow.db"), "ab"))
    attempt("read the server's environ", lambda: open(f"/proc/{server_pid}/environ", "rb").read(64))
    attempt("list other processes", lambda: nonempty([p for p in os.listdir("/proc") if p.isdigit() and int(p) > 3]))
    # Every TCP port listening on this machine: none may answer MLflow's API or a host's admin API.
    ports = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A":
            ports.add(int(local.split(":")[1], 16))
    for port in sorted(ports):
        for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/admin/spec"):
            def get(port=port, path=path):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as answer:
                    return answer.status
            attempt(f"GET :{port}{path}", get)
    for sock in ("run", "envs/dev/serving/state"):
        attempt("connect " + sock, lambda: socket.socket(socket.AF_UNIX).connect(os.path.join(home, sock, "x.sock")))
    # A process that tries to outlive the job.
    subprocess.Popen(["/bin/sh", "-c", "sleep 424242"], start_new_session=True)
    json.dump(tried, open("tried.json", "w"))

    import mlflow
    from sklearn.linear_model import LogisticRegression
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.5)
        model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
        signature = mlflow.models.infer_signature([[1.0]], model.predict([[1.0]]))
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"], signature=signature)
    print("trained", run.info.run_id)
    """
)


def test_a_hostile_training_job_reaches_nothing_but_still_trains_and_registers(
    server: LiveServer, tmp_path: Path
) -> None:
    home = server.project.settings.home
    project = tiny(
        tmp_path / "hostile",
        {"command": f"python hostile.py {home} {server.process.pid}", "timeout_minutes": 5},
        {"hostile.py": HOSTILE},
    )

    code, out, err = mlgate(server, "train", "--env", "dev", "--path", str(project))

    assert code == 0, out + err
    job_id = job_id_of(out)
    tried = json.loads((server.project.settings.jobs_dir / str(job_id) / "work" / "tried.json").read_text())
    through = {name: result for name, result in tried.items() if not result.startswith("refused")}
    assert through == {}, through
    assert any(name.startswith("GET :") for name in tried)  # the server's own port at least was tried
    assert show(server, job_id)["sandbox"] == "bwrap"
    wait_for(lambda: not processes_named("sleep 424242"), timeout=10)

    run_id = re.search(r"trained (\w+)", out).group(1)  # type: ignore[union-attr]
    code, out, err = mlgate(server, "register", "--env", "dev", "--run", run_id, "--name", "hostile", "--json")
    assert code == 0, out + err
    assert json.loads(out)["version"] == 1
