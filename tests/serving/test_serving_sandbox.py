"""A serving host started by the local backend runs sandboxed: a hostile model sees nothing of the home.

The backend is driven directly (no server, no tracking servers): a pyfunc model "from code", placed in
the environment's serving folder as the server would place it, reports through its predictions what it
could read inside the host. The admin API answers only on the host's socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.adapters.serving.local import LocalServingBackend, record_path, stop_hosts
from mlgate.config import Environment, Settings
from mlgate.domain.digest import tree_digest
from tests.support.project import Project

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*Add type hints to the `predict` method:UserWarning"),
]

KEY = "sandbox-test-key-0123456789abcdef"
ENV = "staging"

# Pickled by value into the model (so the host needs no test module): on every predict, inside the
# host, it reports what of the home and of the machine it can reach.
SPY = """
import json, os
from mlflow.pyfunc import PythonModel

HOME = {home!r}
SERVER_PID = {server_pid}


def attempt(action):
    try:
        return "got through: " + repr(action())[:80]
    except Exception as exc:
        return "refused: " + type(exc).__name__


def probe():
    tried = {{}}
    for relative in ("control.db", "web-secret", "envs/dev/mlflow.db", "envs/{env}/mlflow.db", "logs"):
        tried["read " + relative] = attempt(lambda: open(os.path.join(HOME, relative), "rb").read(16))
    tried["list the home"] = attempt(lambda: os.listdir(HOME))
    tried["envs listed"] = attempt(lambda: os.listdir(os.path.join(HOME, "envs")))
    tried["server environ"] = attempt(lambda: open(f"/proc/{{SERVER_PID}}/environ", "rb").read(16))
    tried["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    tried["environ"] = sorted(os.environ)
    return tried


class Spy(PythonModel):
    def predict(self, context, model_input):
        return [json.dumps(probe())] * len(model_input)
"""


@pytest.fixture(scope="module")
def sandboxed(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    """The staging host of a copied home, started by the local backend, serving the spy model."""
    import importlib.util

    import cloudpickle  # type: ignore[import-untyped]
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    project = project_template.copy(tmp_path_factory.mktemp("sandboxed") / "project")
    settings = project.settings
    assert settings.execution.sandbox == "bwrap"
    env = settings.environment(ENV)
    (settings.home / "web-secret").write_text("not for models")  # present or not, it must stay unreadable
    code = tmp_path_factory.mktemp("spy") / "spy.py"
    code.write_text(SPY.format(home=str(settings.home), server_pid=os.getpid(), env=ENV))
    loader = importlib.util.spec_from_file_location("mlgate_spy", code)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    sys.modules["mlgate_spy"] = module  # cloudpickle pickles by value only a module imported as such
    loader.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    staging = code.parent / "model"
    example = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        str(staging),
        python_model=module.Spy(),
        signature=infer_signature(example, ["{}", "{}"]),
        input_example=example,
        pip_requirements=[],
    )
    digest = tree_digest(staging)
    placed = env.serving_dir / digest
    shutil.copytree(staging, placed)
    backend = LocalServingBackend(settings)
    with warnings.catch_warnings():  # the host outlives its Popen object, as it outlives the server: by design
        warnings.simplefilter("ignore", ResourceWarning)
        status, started = backend.ensure(env)
    try:
        assert started and status.running
        spec = {
            "endpoints": {
                "spy": {
                    "key_hashes": [hashlib.sha256(KEY.encode()).hexdigest()],
                    "slots": {"only": {"model_dir": str(placed), "digest": digest, "traffic": 100}},
                }
            }
        }
        backend.push(ENV, spec)
        yield settings, backend
    finally:
        started_stop = time.monotonic()
        stop_hosts(settings)
        # SIGTERM to the group reaches the python inside bwrap, which shuts down (and flushes its request
        # log) well within the grace period after which kill_group would SIGKILL it.
        assert time.monotonic() - started_stop < 8, "the sandboxed host did not stop on SIGTERM"


def _probe(url: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/endpoints/spy/invocations",
        json={"dataframe_split": {"columns": ["x"], "data": [[1.0]]}},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = json.loads(answer.json()["predictions"][0])
    return found


def _host_pids(settings: Settings) -> list[int]:
    """The processes under the host's bwrap (the one host.json names)."""
    record = json.loads(record_path(settings.environment(ENV)).read_text())
    outer = int(record["handle"].split(":")[0])
    family, frontier = [], [outer]
    while frontier:
        pid = frontier.pop()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        family += [int(c) for c in children]
        frontier += [int(c) for c in children]
    return family


def test_a_model_in_a_sandboxed_host_reads_nothing_of_the_home(sandboxed: tuple[Settings, Any]) -> None:
    _, backend = sandboxed
    found = _probe(backend.url(ENV))
    listed = found.pop("list the home")
    refused = {k: v for k, v in found.items() if k.startswith(("read ", "server "))}
    assert refused and all(v.startswith("refused") for v in refused.values()), refused
    # Only the skeleton bwrap makes for the mounts under the home (envs/staging/...), none of its files.
    assert listed in ("got through: ['envs']", "got through: []"), listed
    assert found["envs listed"] == "got through: ['staging']", found["envs listed"]
    # Its own pid namespace: no server, no other process of the machine.
    assert os.getpid() not in found["pids"] and max(found["pids"]) < 50, found["pids"]
    # The server's environment stays outside: PATH, locale, the admin token, what bwrap sets.
    inner = {k for k in found["environ"] if not k.startswith("_MLFLOW")}  # MLflow sets its own inside
    assert inner <= {
        "PATH",
        "PWD",
        "HOME",
        "TMPDIR",
        "MLGATE_HOST_ADMIN_TOKEN",
        *(k for k in os.environ if k.startswith(("LANG", "LC_", "OPENBLAS_", "OMP_"))),
    }, inner


def test_the_host_lives_in_its_own_mount_namespace(sandboxed: tuple[Settings, Any]) -> None:
    settings, _ = sandboxed
    inside = _host_pids(settings)
    ours = os.readlink("/proc/self/ns/mnt")
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in inside}
    python = [pid for pid, argv in commands.items() if b"python" in Path(argv[0].decode()).name.encode()]
    assert python, inside
    for pid in python:
        assert os.readlink(f"/proc/{pid}/ns/mnt") != ours
        root = Path(f"/proc/{pid}/root")
        assert not (root / str(settings.home / "control.db").lstrip("/")).exists()
        assert (root / str(settings.environment(ENV).serving_dir).lstrip("/")).is_dir()


def test_the_admin_api_answers_on_the_private_socket_only(sandboxed: tuple[Settings, Any]) -> None:
    settings, backend = sandboxed
    record = json.loads(record_path(settings.environment(ENV)).read_text())
    socket = Path(record["admin_socket"])
    assert stat.S_ISSOCK(socket.stat().st_mode)
    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(socket.parent.parent.stat().st_mode) == 0o700
    auth = {"Authorization": f"Bearer {record['token']}"}
    for path in ("/admin/spec", "/admin/stats"):
        assert httpx.get(f"{backend.url(ENV)}{path}", headers=auth, timeout=10).status_code == 404
    assert backend.stats(ENV) is not None
    assert backend.status(ENV).applied is not None


def test_the_sandbox_cannot_be_made_error_is_raised_as_is(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlgate import sandbox

    settings = project.settings
    backend = LocalServingBackend(settings)
    monkeypatch.setattr(backend._sandbox, "_bwrap", None)
    sandbox._probe.cache_clear()
    env: Environment = settings.environment(ENV)
    with pytest.raises(sandbox.SandboxUnavailable):
        backend.ensure(env)
    sandbox._probe.cache_clear()
    assert not backend.running(ENV)
