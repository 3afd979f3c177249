"""The serving host as a caller sees it: a real `python -m mlgate.serving` process on a free port."""

from __future__ import annotations

import contextlib
import re
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.domain.digest import tree_digest
from tests.support import serving_host
from tests.support.serving_host import (
    ADMIN,
    COLUMNS,
    MAX_CONCURRENCY,
    MAX_CONNECTIONS,
    PRIMARY,
    SECONDARY,
    TYPES,
    Host,
    Models,
    patient_rows,
    spec,
)

# MLflow warns about its own type hints while it imports; only that warning is silenced.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")

# The module-scoped fixtures, bound here so that pytest finds them: this module's two trained models and
# the host serving them.
models = serving_host.models
host = serving_host.host


def test_every_payload_format_gives_the_models_own_predictions(host: Host, models: Models) -> None:
    frame, rows = patient_rows()
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
    _, rows = patient_rows(1)
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
        # the id is the host's; the caller's own is kept beside it
        assert answer.headers["x-request-id"] != "req-123" and answer.headers["x-client-request-id"] == "req-123"


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
    _, rows = patient_rows(1)
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
    frame, rows = patient_rows(1)
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
    for token in (None, "not-the-metrics-token-0123", PRIMARY):  # none, a wrong one, an endpoint key
        refused = host.metrics(token=token)
        assert refused.status_code == 401 and "metrics token" in refused.json()["message"], refused.text
    metrics = host.metrics().text
    assert 'slot="green",kind="mirror",status="200"' in metrics
    assert 'mlgate_serving_requests_total{endpoint="diabetes",slot="blue",kind="live",status="200"}' in metrics
    # Latency per endpoint and slot, up to 30 s; model loads a histogram: no series per digest.
    assert 'mlgate_serving_request_duration_seconds_bucket{endpoint="diabetes",slot="green",le="30"} ' in metrics
    assert 'mlgate_serving_request_duration_seconds_bucket{endpoint="diabetes",slot="blue",le="+Inf"}' in metrics
    assert "mlgate_serving_batch_size_count" in metrics
    loads = re.search(r"^mlgate_serving_model_load_duration_seconds_count (\d+)$", metrics, re.M)
    assert loads is not None and int(loads.group(1)) >= 2, metrics  # blue and green, each loaded once
    assert models.green_digest not in metrics and models.blue_digest not in metrics


def test_spec_changes_under_load_fail_no_request(host: Host, models: Models) -> None:
    _, rows = patient_rows(1)
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
        _, rows = patient_rows(1)
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
    _, rows = patient_rows(1)  # the spec in force (blue 100%) still serves
    assert host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}).headers["mlgate-deployment"] == "blue"


# -- hostile callers: raw sockets, so that what is (not) sent is exactly what the test says --------------

CLOSED_WITHIN_S = 15.0  # generous: the host's deadlines in these tests are 2 s
SCORE = b"POST /endpoints/diabetes/invocations HTTP/1.1\r\nHost: host\r\nContent-Type: application/json\r\n"
KEY = f"Authorization: Bearer {PRIMARY}\r\n".encode()


@dataclass
class Reply:
    status: int | None  # None: closed without an answer
    headers: dict[str, str]
    body: bytes


def _connect(host: Host) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", host.port), timeout=CLOSED_WITHIN_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _parse(raw: bytes) -> Reply:
    if not raw:
        return Reply(None, {}, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return Reply(int(status_line.split()[1]), headers, body)


def _until_closed(sock: socket.socket, *, trickle: bytes = b"") -> Reply:
    """Everything the host sends until it closes the connection (within `CLOSED_WITHIN_S`, else the test
    fails); meanwhile `trickle` is sent a byte at a time, 5 bytes a second, for as long as the host takes it."""
    deadline, received = time.monotonic() + CLOSED_WITHIN_S, b""
    while True:
        assert time.monotonic() < deadline, f"the host kept the connection open (it sent {received[:200]!r})"
        if select.select([sock], [], [], 0.2)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # closed with unread bytes of ours in its buffer
                chunk = b""
            if not chunk:
                return _parse(received)
            received += chunk
        elif trickle:
            with contextlib.suppress(OSError):  # it may close while we send
                sock.send(trickle[:1])


def _sent(host: Host, raw: bytes, *, trickle: bytes = b"") -> Reply:
    with _connect(host) as sock:
        with contextlib.suppress(OSError):  # the host may close before it has all of it
            sock.sendall(raw)
        return _until_closed(sock, trickle=trickle)


def _until(probe: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + CLOSED_WITHIN_S
    while not (found := probe()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


def test_a_caller_without_the_key_is_answered_before_its_body_is_read(host: Host) -> None:
    declared = b"Content-Length: 104857600\r\n\r\n"  # 100 MiB, never sent
    for path in (b"/endpoints/diabetes/invocations", b"/v2/models/diabetes/infer", b"/endpoints/diabetes/feedback"):
        for auth, said in ((b"", "missing key"), (b"Authorization: Bearer not-the-key\r\n", "wrong key")):
            start = b"POST " + path + b" HTTP/1.1\r\nHost: host\r\nContent-Type: application/json\r\n"
            reply = _sent(host, start + auth + declared)
            assert reply.status == 401 and reply.headers["connection"] == "close", (path, reply)
            assert said.encode() in reply.body, (path, reply.body)
    # a body declared larger than the host takes is refused unread too, with the key
    reply = _sent(host, SCORE + KEY + declared)
    assert reply.status == 413 and reply.headers["connection"] == "close" and b"larger than" in reply.body


def test_a_caller_trickling_its_headers_or_its_body_is_cut_off(host: Host) -> None:
    attacks = [  # side by side: each waits for its deadline
        (SCORE + KEY + b"X-Slow: ", b"a"),  # headers, a byte at a time
        (SCORE + KEY + b"Content-Length: 1000\r\n\r\n{", b" "),  # a body, a byte at a time
        (b"", b""),  # nothing at all
    ]
    with ThreadPoolExecutor(len(attacks)) as pool:
        headers, body, idle = pool.map(lambda attack: _sent(host, attack[0], trickle=attack[1]), attacks)
    assert headers.status == 408 and body.status == 408, (headers, body)
    assert idle == Reply(None, {}, b"")  # a connection that sends nothing is closed, unanswered
    endless = _sent(host, SCORE + b"X-Big: " + b"a" * 200_000)
    assert endless.status in (431, None), endless  # 431, or a reset: the host does not read the rest
    _, rows = patient_rows(1)
    assert host.score({"dataframe_split": {"columns": COLUMNS, "data": rows}}).status_code == 200


def test_connections_beyond_the_limit_are_refused_and_the_admin_socket_still_answers(host: Host) -> None:
    held = [_connect(host) for _ in range(MAX_CONNECTIONS)]
    try:
        with _connect(host) as one_more:
            refused = _until_closed(one_more)
        assert refused.status == 503 and refused.headers["retry-after"] == "1", refused
        with host.admin() as admin:  # the control plane reaches the host all the same
            assert admin.get("/admin/spec").status_code == 200
        for sock in held:  # idle: each is closed at the header deadline
            assert _until_closed(sock).status in (None, 503)
    finally:
        for sock in held:
            sock.close()
    _, rows = patient_rows(1)
    payload = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    _until(lambda: host.score(payload).status_code == 200, "the host to take connections again")


def test_requests_beyond_the_concurrency_limit_are_answered_busy(host: Host) -> None:
    _, rows = patient_rows(1)
    payload = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    held = [_connect(host) for _ in range(MAX_CONCURRENCY)]
    try:
        for sock in held:  # each request in flight, waiting for the rest of its body
            sock.sendall(SCORE + KEY + b"Content-Length: 1000\r\n\r\n{")
        busy = _until(lambda: (a := host.score(payload)).status_code == 503 and a, "a 503 while the host is full")
        assert busy.headers["retry-after"] == "1" and busy.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert f"{MAX_CONCURRENCY} requests" in busy.json()["message"]
    finally:
        for sock in held:
            sock.close()
    _until(lambda: host.score(payload).status_code == 200, "the host to take requests again")
