"""The serving host as a caller sees it: a real `python -m mlgate.serving` process on a free port."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
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

# MLflow warns about its own type hints while it imports; only that warning is silenced.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")


def _patients(n: int, seed: int) -> tuple[Any, np.ndarray]:
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


def _save_model(tmp: Path, *, c: float, seed: int) -> tuple[Path, str, Any]:
    """Train, save in MLflow's format, place under tmp/serving/<digest>/ as the server would."""
    from mlflow.models import ModelSignature
    from mlflow.sklearn import save_model
    from mlflow.types import ColSpec, Schema
    from sklearn.linear_model import LogisticRegression

    frame, label = _patients(400, seed)
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
        _, digests[slot], model = _save_model(root, c=c, seed=seed)
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

    def start(self) -> None:
        self.spawn()
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


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def spec(m: Models, blue: int = 100, *, mirror: dict[str, Any] | None = None, green_digest: str | None = None) -> Any:
    endpoint: dict[str, Any] = {
        "key_hashes": [_sha(PRIMARY), _sha(SECONDARY)],
        "slots": {
            "blue": {"model_dir": str(m.blue_dir), "digest": m.blue_digest, "traffic": blue},
            "green": {"model_dir": str(m.green_dir), "digest": green_digest or m.green_digest, "traffic": 100 - blue},
        },
    }
    if mirror:
        endpoint["mirror"] = mirror
    return {"endpoints": {"diabetes": endpoint}, "batching": {"max_batch_size": 32, "max_wait_ms": 1}}


@pytest.fixture(scope="module")
def host(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = Host(tmp_path_factory.mktemp("state"))
    running.start()
    assert running.push(spec(models)).status_code == 200
    yield running
    running.kill()


def _rows(n: int = 5) -> tuple[Any, list[list[Any]]]:
    frame, _ = _patients(n, 99)
    return frame, [
        [int(v) if t == "long" else float(v) for v, t in zip(row, TYPES, strict=True)] for row in frame.values
    ]


def test_every_payload_format_gives_the_models_own_predictions(host: Host, models: Models) -> None:
    frame, rows = _rows()
    expected = models.blue.predict(frame).tolist()
    records = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    reordered = list(reversed(COLUMNS))
    payloads = [
        {"dataframe_split": {"columns": COLUMNS, "data": rows}},
        {"dataframe_split": {"columns": reordered, "data": [list(reversed(r)) for r in rows]}},
        {"dataframe_records": records},
        {"instances": records},
        {"instances": rows},
        {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}},
    ]
    for payload in payloads:
        answer = host.score(payload, slot="blue")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": expected}
        assert answer.headers["x-request-id"]

    auth = {"Authorization": f"Bearer {PRIMARY}", "mlgate-deployment": "blue"}
    per_column = {
        "inputs": [
            {
                "name": c,
                "shape": [len(rows)],
                "datatype": "INT64" if t == "long" else "FP64",
                "data": [r[i] for r in rows],
            }
            for i, (c, t) in enumerate(zip(COLUMNS, TYPES, strict=True))
        ]
    }
    matrix = {"inputs": [{"name": "x", "shape": [len(rows), len(COLUMNS)], "datatype": "FP64", "data": rows}]}
    for payload in (per_column, matrix):
        answer = httpx.post(f"{host.url}/v2/models/diabetes/infer", json=payload, headers=auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == answer.headers["x-request-id"]
        output = answer.json()["outputs"][0]
        assert output["data"] == expected and output["shape"] == [len(rows)] and output["datatype"] == "INT64"
    assert httpx.get(f"{host.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{host.url}/v2/models/diabetes/ready", headers=auth).status_code == 200
    metadata = httpx.get(f"{host.url}/v2/models/diabetes", headers=auth).json()
    assert [i["name"] for i in metadata["inputs"]] == COLUMNS


def test_bad_requests_get_4xx_naming_the_problem(host: Host) -> None:
    _, rows = _rows(1)
    good = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    assert host.score(good, key=SECONDARY).status_code == 200
    url = f"{host.url}/endpoints/diabetes/invocations"
    auth = {"Authorization": f"Bearer {PRIMARY}"}
    cases: list[tuple[httpx.Response, int, str]] = [
        (httpx.post(url, json=good), 401, "missing key"),
        (host.score(good, key="not-the-key"), 401, "wrong key"),
        (httpx.post(url, content=b"{}", headers={**auth, "content-type": "text/csv"}), 415, "application/json"),
        (httpx.post(url, content=b"{not json", headers={**auth, "content-type": "application/json"}), 400, "JSON"),
        (host.score({"dataframe_split": {"columns": COLUMNS, "data": rows * 5000}}), 413, "larger than"),
        (host.score({"dataframe_split": {"columns": COLUMNS[:-1], "data": [r[:-1] for r in rows]}}), 422, "'Age'"),
        (host.score({"dataframe_split": {"columns": [*COLUMNS, "Zip"], "data": [[*rows[0], 1]]}}), 422, "'Zip'"),
        (host.score({"dataframe_records": [{**dict(zip(COLUMNS, rows[0], strict=True)), "BMI": "fat"}]}), 422, "'BMI'"),
        (host.score({"dataframe_split": {"columns": COLUMNS, "data": [rows[0][:3]]}}), 422, "row 0"),
        (host.score({"instances": [[1, 2]]}), 422, "Pregnancies"),
        (host.score({"records": rows}), 400, "'records'"),
        (host.score([1, 2, 3]), 400, "dataframe_split"),
        (host.score(good, slot="purple"), 404, "purple"),
    ]
    for answer, status, fragment in cases:
        assert answer.status_code == status, (fragment, answer.text)
        body = answer.json()
        assert set(body) == {"error_code", "message"} and fragment in body["message"], body

    v2 = f"{host.url}/v2/models/diabetes/infer"
    tensor = {"name": "Age", "shape": [1], "datatype": "INT64", "data": [40]}
    for payload, status, fragment in [
        ({"inputs": [tensor]}, 422, "missing column"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, 422, "3 columns"),
        ({"inputs": [{"name": "x", "shape": [1, 6], "datatype": "BYTES", "data": ["a"] * 6}]}, 422, "BYTES"),
        ({"inputs": [{**tensor, "shape": [2]}]}, 422, "'Age'"),
        ({"nothing": 1}, 400, "inputs"),
    ]:
        answer = httpx.post(v2, json=payload, headers={**auth, "x-request-id": "req-123"})
        assert answer.status_code == status, (fragment, answer.text)
        assert fragment in answer.json()["error"]
        assert answer.headers["x-request-id"] == "req-123"


def test_a_tampered_model_is_refused_and_the_old_spec_keeps_serving(host: Host, models: Models) -> None:
    tampered = models.root / "serving" / "tampered"
    shutil.copytree(models.green_dir, tampered)
    with (tampered / "MLmodel").open("a") as handle:
        handle.write("# one more byte\n")
    bad = spec(models, 50, green_digest=models.green_digest)
    bad["endpoints"]["diabetes"]["slots"]["green"]["model_dir"] = str(tampered)
    answer = host.push(bad)
    assert answer.status_code == 409
    message = answer.json()["message"]
    assert models.green_digest in message and tree_digest(tampered) in message
    _, rows = _rows(1)
    for _ in range(20):  # the old spec (blue 100%) is still in force
        assert (
            host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}).headers["mlgate-deployment"] == "blue"
        )
    assert host.push({"endpoints": {"diabetes": {"slots": {}}}}).status_code == 422
    with host.admin(token="x") as admin:
        assert admin.put("/admin/spec", json=spec(models)).status_code == 401
    # On the scoring port the admin API does not exist, whatever the token.
    for method in ("GET", "PUT"):
        for path in ("/admin/spec", "/admin/stats"):
            answer = httpx.request(
                method, f"{host.url}{path}", json=spec(models), headers={"Authorization": f"Bearer {ADMIN}"}
            )
            assert answer.status_code == 404, (method, path, answer.text)


def test_traffic_split_slot_header_and_mirror(host: Host, models: Models) -> None:
    frame, rows = _rows(1)
    payload = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    assert host.push(spec(models, 70)).status_code == 200
    with httpx.Client() as client:
        slots = [
            client.post(
                f"{host.url}/endpoints/diabetes/invocations",
                json=payload,
                headers={"Authorization": f"Bearer {PRIMARY}"},
            ).headers["mlgate-deployment"]
            for _ in range(400)
        ]
    assert 0.6 < slots.count("blue") / len(slots) < 0.8, slots.count("blue")

    mirror = {"slot": "green", "percent": 50}
    assert host.push(spec(models, 100, mirror=mirror)).status_code == 200
    expected = models.blue.predict(frame).tolist()
    for _ in range(50):
        answer = host.score(payload)
        assert answer.headers["mlgate-deployment"] == "blue" and answer.json() == {"predictions": expected}
    targeted = host.score(payload, slot="green")  # 0% traffic, reachable by name
    assert targeted.headers["mlgate-deployment"] == "green"
    assert targeted.json() == {"predictions": models.green.predict(frame).tolist()}
    time.sleep(0.2)
    metrics = httpx.get(f"{host.url}/metrics").text
    assert 'slot="green",kind="mirror",status="200"' in metrics
    assert 'mlgate_serving_requests_total{endpoint="diabetes",slot="blue",kind="live",status="200"}' in metrics
    assert "mlgate_serving_request_duration_seconds_bucket" in metrics
    assert "mlgate_serving_batch_size_count" in metrics
    assert f'mlgate_serving_model_load_seconds{{digest="{models.green_digest}"}}' in metrics


def test_spec_changes_under_load_fail_no_request(host: Host, models: Models) -> None:
    _, rows = _rows(1)
    payload = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    failures: list[str] = []
    done = threading.Event()
    counts = [0]

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                try:
                    answer = client.post(
                        f"{host.url}/endpoints/diabetes/invocations",
                        json=payload,
                        headers={"Authorization": f"Bearer {PRIMARY}"},
                    )
                    if answer.status_code != 200:
                        failures.append(answer.text)
                    counts[0] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for index, blue in enumerate([0, 100, 50, 0, 100, 10]):
            batching = {"max_batch_size": 8 + index, "max_wait_ms": 1}  # a new batcher each time: old ones retire
            assert host.push({**spec(models, blue), "batching": batching}).status_code == 200
            time.sleep(0.5)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    assert counts[0] > 100


def test_a_killed_host_restarts_from_its_saved_spec(models: Models, tmp_path: Path) -> None:
    first = Host(tmp_path / "state")
    first.start()
    try:
        assert first.push(spec(models, 0)).status_code == 200
    finally:
        first.kill()
    again = Host(tmp_path / "state")
    again.start()
    try:
        _, rows = _rows(1)
        answer = again.score({"dataframe_split": {"columns": COLUMNS, "data": rows}})
        assert answer.status_code == 200 and answer.headers["mlgate-deployment"] == "green"
        assert httpx.get(f"{again.url}/v2/health/ready").json() == {"ready": True}
    finally:
        again.kill()


def _escaping(models: Models, name: str, *, pickled_model: str | None = None, symlink: bool = False) -> Path:
    """A copy of green whose MLmodel names a file outside it, or whose model file is a symlink out."""
    import yaml

    folder = models.root / "serving" / name
    shutil.copytree(models.green_dir, folder)
    conf = yaml.safe_load((folder / "MLmodel").read_text())
    model_file = conf["flavors"]["sklearn"]["pickled_model"]
    if pickled_model is not None:
        conf["flavors"]["sklearn"]["pickled_model"] = pickled_model
        (folder / "MLmodel").write_text(yaml.safe_dump(conf))
    if symlink:
        outside = models.root / "elsewhere" / model_file
        outside.parent.mkdir(exist_ok=True)
        (folder / model_file).rename(outside)
        (folder / model_file).symlink_to(outside)
    return folder


def test_a_model_naming_files_outside_its_folder_is_refused_before_loading(host: Host, models: Models) -> None:
    assert host.push(spec(models)).status_code == 200
    for name, kwargs, said in (
        ("climbs", {"pickled_model": "../elsewhere/model.pkl"}, "../elsewhere/model.pkl"),
        ("absolute", {"pickled_model": str(models.blue_dir / "model.skops")}, str(models.blue_dir)),
        ("symlinked", {"symlink": True}, "is a symlink that points outside it"),
    ):
        folder = _escaping(models, name, **kwargs)
        bad = spec(models, 50, green_digest=tree_digest(folder))
        bad["endpoints"]["diabetes"]["slots"]["green"]["model_dir"] = str(folder)
        answer = host.push(bad)
        assert answer.status_code == 409, answer.text
        assert said in answer.json()["message"] and "refusing to load it" in answer.json()["message"]
    _, rows = _rows(1)  # the spec in force (blue 100%) still serves
    assert host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}).headers["mlgate-deployment"] == "blue"
