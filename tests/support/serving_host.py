"""A serving host process for the serving tests, and the two models it serves.

`models` (a module-scoped fixture) is two classifiers trained and saved in MLflow's format once per session
and copied for each module that binds it; `Host` is a real `python -m mlgate.serving` process on a free
port, with its admin API on its own Unix socket; `spec` is the deployment spec the control plane would push
for them (its endpoint keys' and metrics token's hashes included). The module-scoped `host` serves them
with short deadlines and small limits (`LIMITS`), so the tests that attack those stay fast.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mlgate.domain.digest import tree_digest
from mlgate.ports import free_port
from tests.support.worlds import Built, built_once

ADMIN = "admin-token-for-tests-0123456789"
PRIMARY, SECONDARY = "primary-key-abcdefghijklmnop", "secondary-key-abcdefghijklmnop"
COLUMNS = ["Pregnancies", "PlasmaGlucose", "DiastolicBloodPressure", "BMI", "DiabetesPedigree", "Age"]
TYPES = ["long", "long", "long", "double", "double", "long"]
MAX_BODY = 64 * 1024
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
# What callers may take of the module's `host`: short deadlines (seconds) and small limits, so that the
# tests attacking them are quick; each request the other tests send arrives well within them.
HEADER_TIMEOUT_S, BODY_TIMEOUT_S, MAX_CONNECTIONS, MAX_CONCURRENCY = 2, 2, 16, 8
LIMITS = (
    *("--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S)),
    *("--max-connections", str(MAX_CONNECTIONS), "--max-concurrency", str(MAX_CONCURRENCY)),
)


def patient_frame(n: int, seed: int) -> tuple[Any, np.ndarray]:
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "Pregnancies": rng.integers(0, 14, n),
            "PlasmaGlucose": rng.integers(44, 192, n),
            "DiastolicBloodPressure": rng.integers(24, 117, n),
            "BMI": rng.uniform(18.2, 56.0, n).round(1),
            "DiabetesPedigree": rng.uniform(0.078, 2.3, n).round(3),
            "Age": rng.integers(21, 77, n),
        }
    )
    logit = 0.02 * (frame.PlasmaGlucose - 110) + 0.15 * (frame.BMI - 31) + 0.08 * (frame.Age - 35)
    label = (logit + rng.normal(0, 1, n) > 0).astype(int).to_numpy()
    return frame, label


def place_model(tmp: Path, *, c: float, seed: int) -> tuple[Path, str, Any]:
    """Train, save in MLflow's format, place under tmp/serving/<digest>/ as the server would."""
    from mlflow.models import ModelSignature
    from mlflow.sklearn import save_model
    from mlflow.types import ColSpec, Schema
    from sklearn.linear_model import LogisticRegression

    frame, label = patient_frame(400, seed)
    model = LogisticRegression(C=c, max_iter=2000).fit(frame, label)
    signature = ModelSignature(
        inputs=Schema([ColSpec(t, name) for t, name in zip(TYPES, COLUMNS, strict=True)]),
        outputs=Schema([ColSpec("long")]),
    )
    staging = tmp / f"build-{seed}"
    save_model(model, str(staging), signature=signature, input_example=frame.head(3))
    digest = tree_digest(staging)
    target = tmp / "serving" / digest
    shutil.copytree(staging, target)
    return target, digest, model


@dataclass
class Models:
    blue_dir: Path
    blue_digest: str
    blue: Any
    green_dir: Path
    green_digest: str
    green: Any
    root: Path


SLOTS = {"blue": (1.0, 1), "green": (0.0005, 2)}  # slot: (C, seed)


def _two_models(root: Path) -> Built:
    """The template of `models`: both saved under root/serving/<digest>/, the trained models pickled beside."""
    digests = {}
    for slot, (c, seed) in SLOTS.items():
        _, digests[slot], model = place_model(root, c=c, seed=seed)
        (root / f"{slot}.pickle").write_bytes(pickle.dumps(model))
    return Built(facts=digests)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """This module's copy of two models trained and saved once per session (saving one takes seconds: MLflow
    infers its requirements in a subprocess)."""
    template = built_once(tmp_path_factory, "serving-models", _two_models)
    tmp = tmp_path_factory.mktemp("models")
    shutil.copytree(template.root, tmp, dirs_exist_ok=True)
    digests: dict[str, str] = template.facts
    blue, green = (pickle.loads((tmp / f"{slot}.pickle").read_bytes()) for slot in SLOTS)  # noqa: S301 (ours)
    return Models(
        tmp / "serving" / digests["blue"],
        digests["blue"],
        blue,
        tmp / "serving" / digests["green"],
        digests["green"],
        green,
        tmp,
    )


class Host:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the admin API answers only here (beside the state folder: each host of a session has its own)
        self.admin_socket = state_dir.with_name(f"{state_dir.name}.admin.sock")
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self, *extra: str, new_session: bool = False) -> None:
        """`python -m mlgate.serving` on this host's state folder, port and admin socket, plus `extra`."""
        command = [sys.executable, "-m", "mlgate.serving", "--state-dir", str(self.state_dir)]
        command += ["--port", str(self.port), "--admin-socket", str(self.admin_socket)]
        command += ["--max-body-bytes", str(MAX_BODY), *extra]
        env = {**os.environ, "MLGATE_HOST_ADMIN_TOKEN": ADMIN}
        self.process = subprocess.Popen(command, env=env, start_new_session=new_session)

    def start(self, *extra: str) -> None:
        self.spawn(*extra)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the serving host did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def admin(self, *, token: str | None = ADMIN) -> httpx.Client:
        """A client of the admin API, over the host's Unix socket."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.HTTPTransport(uds=str(self.admin_socket))
        return httpx.Client(base_url="http://host", transport=transport, headers=headers, timeout=60)

    def push(self, spec: dict[str, Any]) -> httpx.Response:
        with self.admin() as admin:
            return admin.put("/admin/spec", json=spec)

    def score(self, payload: Any, *, key: str = PRIMARY, slot: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
        if slot:
            headers["mlgate-deployment"] = slot
        return httpx.post(f"{self.url}/endpoints/diabetes/invocations", json=payload, headers=headers, **kw)

    def metrics(self, *, token: str | None = METRICS_TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}/metrics", headers=headers, timeout=30)


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def spec(m: Models, blue: int = 100, *, mirror: dict[str, Any] | None = None, green_digest: str | None = None) -> Any:
    endpoint: dict[str, Any] = {
        "key_hashes": [sha256_hex(PRIMARY), sha256_hex(SECONDARY)],
        "slots": {
            "blue": {"model_dir": str(m.blue_dir), "digest": m.blue_digest, "traffic": blue},
            "green": {"model_dir": str(m.green_dir), "digest": green_digest or m.green_digest, "traffic": 100 - blue},
        },
    }
    if mirror:
        endpoint["mirror"] = mirror
    return {
        "endpoints": {"diabetes": endpoint},
        "batching": {"max_batch_size": 32, "max_wait_ms": 1},
        "metrics_token_hashes": [sha256_hex(METRICS_TOKEN)],
    }


@pytest.fixture(scope="module")
def host(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = Host(tmp_path_factory.mktemp("state"))
    running.start(*LIMITS)
    assert running.push(spec(models)).status_code == 200
    yield running
    running.kill()


def patient_rows(n: int = 5) -> tuple[Any, list[list[Any]]]:
    frame, _ = patient_frame(n, 99)
    return frame, [
        [int(v) if t == "long" else float(v) for v, t in zip(row, TYPES, strict=True)] for row in frame.values
    ]
