"""A serving host with two worker processes, as a caller sees it: `python -m mlgate.serving --workers 2`.

Which worker takes a connection is the kernel's choice; a request and a `GET /health` sent on the same
keep-alive connection reach the same worker, so the second names the worker that answered the first.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import serving_host
from tests.support.serving_host import COLUMNS, METRICS_TOKEN, PRIMARY, Host, Models, patient_rows, spec

# MLflow warns about its own type hints while it imports; only that warning is silenced.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")

models = serving_host.models  # this module's own two trained models (see tests/support/serving_host.py)

WORKERS = 2
TLS = ssl.create_default_context()  # built once: a client builds its own in 30 ms, and the tests make hundreds
SCORED = re.compile(
    r'^mlgate_serving_requests_total\{endpoint="diabetes",slot="(\w+)",kind="live",status="200"\} (\d+)$', re.M
)


class WorkersHost(Host):
    """A host started as a supervisor would start it: its own session, so one killpg reaches all of it."""

    def start(self) -> None:
        self.spawn("--workers", str(WORKERS), new_session=True)
        self.workers(timeout_s=30)

    def workers(self, *, timeout_s: float = 15) -> dict[int, int]:
        """Worker index -> pid, once every worker answers."""
        seen: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(seen) < WORKERS:
            assert time.monotonic() < deadline, f"workers answering: {seen}"
            try:
                health = httpx.get(f"{self.url}/health", headers={"Connection": "close"}, timeout=1).json()
                seen[health["worker"]] = health["pid"]
            except httpx.TransportError:
                time.sleep(0.1)
        return seen

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # the group outlives its leader
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def on_each_connection(
        self, n: int, call: Callable[[httpx.Client], httpx.Response], *, admin: bool = False
    ) -> list[tuple[Any, int]]:
        """``n`` calls, each on a new connection (8 at a time): (response, the worker that answered).
        ``admin``: connections to the admin socket (which answers ``/health`` too) instead of the port."""

        def once(_: int) -> tuple[Any, int]:
            with self.admin() if admin else httpx.Client(base_url=self.url, timeout=30, verify=TLS) as client:
                answer = call(client)
                return answer, client.get("/health").json()["worker"]

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(once, range(n)))

    def scored(self) -> dict[str, int]:
        """The host's count of scoring answers by slot, once the workers' counters have settled."""
        time.sleep(1.3)  # each worker publishes its counters every second
        return {slot: int(n) for slot, n in SCORED.findall(self.metrics().text)}


def _score(client: httpx.Client, rows: list[list[Any]]) -> httpx.Response:
    return client.post(
        "/endpoints/diabetes/invocations",
        json={"dataframe_split": {"columns": COLUMNS, "data": rows}},
        headers={"Authorization": f"Bearer {PRIMARY}"},
    )


def _admin(client: httpx.Client) -> httpx.Response:
    return client.get("/admin/spec")


def _ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(scope="module")
def host(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersHost]:
    running = WorkersHost(tmp_path_factory.mktemp("state"))
    running.start()
    try:
        assert running.push(spec(models)).status_code == 200
        yield running
    finally:
        running.stop()


def test_requests_spread_over_the_workers_and_all_score_right(host: WorkersHost, models: Models) -> None:
    frame, rows = patient_rows(3)
    expected = models.blue.predict(frame).tolist()
    before = host.scored().get("blue", 0)
    answers = host.on_each_connection(200, lambda client: _score(client, rows))
    assert all(a.status_code == 200 and a.json() == {"predictions": expected} for a, _ in answers)
    assert {worker for _, worker in answers} == set(range(WORKERS))
    # /metrics counts the host's requests, whichever worker answers the scrape.
    assert host.scored()["blue"] == before + 200
    scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    scrapes = host.on_each_connection(20, lambda client: client.get("/metrics", headers=scrape))
    assert {worker for _, worker in scrapes} == set(range(WORKERS))
    assert {SCORED.findall(a.text)[0] for a, _ in scrapes} == {("blue", str(before + 200))}
    ready = host.on_each_connection(10, lambda client: client.get("/v2/health/ready"))
    assert all(a.json() == {"ready": True} for a, _ in ready)


def test_a_pushed_spec_is_served_by_every_worker_when_the_put_answers(host: WorkersHost, models: Models) -> None:
    frame, rows = patient_rows(3)
    for blue, slot, model in [(0, "green", models.green), (100, "blue", models.blue)]:
        pushed = spec(models, blue)
        assert host.push(pushed).status_code == 200
        answers = host.on_each_connection(60, lambda client: _score(client, rows))
        assert {worker for _, worker in answers} == set(range(WORKERS))
        for answer, worker in answers:
            assert answer.headers["mlgate-deployment"] == slot, worker
            assert answer.json() == {"predictions": model.predict(frame).tolist()}
        admin = host.on_each_connection(20, _admin, admin=True)
        assert {worker for _, worker in admin} == set(range(WORKERS))
        assert all(a.json()["spec"] == pushed for a, _ in admin)

    # A tampered model is refused by the worker that takes the PUT, before the spec is saved: no worker moves.
    tampered = models.root / "serving" / "tampered-for-workers"
    shutil.copytree(models.green_dir, tampered)
    with (tampered / "MLmodel").open("a") as handle:
        handle.write("# one more byte\n")
    bad = spec(models, 0)
    bad["endpoints"]["diabetes"]["slots"]["green"]["model_dir"] = str(tampered)
    assert host.push(bad).status_code == 409
    time.sleep(0.5)  # longer than a worker takes to notice a saved spec
    answers = host.on_each_connection(20, lambda client: _score(client, rows))
    assert {a.headers["mlgate-deployment"] for a, _ in answers} == {"blue"}


def test_a_worker_that_cannot_apply_the_spec_fails_the_put(host: WorkersHost, models: Models) -> None:
    """The PUT names the worker that failed, rather than waiting for it; pushing again after the fix works."""
    copy = models.root / "serving" / "green-copy-for-workers"
    shutil.copytree(models.green_dir, copy)
    pushed = spec(models, 0)
    pushed["endpoints"]["diabetes"]["slots"]["green"]["model_dir"] = str(copy)
    saved = host.state_dir / "spec.json"
    pids = host.workers()
    with host.admin() as client:  # one connection to the admin socket: the PUT reaches `receiver`
        receiver = client.get("/health").json()["worker"]
        (sibling,) = set(pids) - {receiver}
        # The sibling is paused while the PUT is applied and saved, and its model changes before it looks.
        os.kill(pids[sibling], signal.SIGSTOP)
        original = (copy / "MLmodel").read_bytes()
        saved_before = saved.stat().st_mtime_ns

        def tamper_then_resume() -> None:
            try:
                _wait(lambda: saved.stat().st_mtime_ns != saved_before, 30, "the spec is saved")
                (copy / "MLmodel").write_bytes(original + b"# one more byte\n")
            finally:
                os.kill(pids[sibling], signal.SIGCONT)

        thread = threading.Thread(target=tamper_then_resume)
        thread.start()
        started = time.monotonic()
        answer = client.put("/admin/spec", json=pushed)
        thread.join()
    assert answer.status_code == 500, answer.text
    assert time.monotonic() - started < 30  # reported, not waited for until the 60 s timeout
    message = answer.json()["message"]
    assert f"worker {sibling}" in message and models.green_digest in message, message

    (copy / "MLmodel").write_bytes(original)
    assert host.push(pushed).status_code == 200
    _, rows = patient_rows(1)
    answers = host.on_each_connection(20, lambda client: _score(client, rows))
    assert {worker for _, worker in answers} == set(range(WORKERS))
    assert {a.headers["mlgate-deployment"] for a, _ in answers} == {"green"}
    assert host.push(spec(models)).status_code == 200


def test_a_killed_worker_comes_back_and_the_host_keeps_answering(host: WorkersHost, models: Models) -> None:
    frame, rows = patient_rows(2)
    expected = models.blue.predict(frame).tolist()
    before = host.scored().get("blue", 0)
    pids = host.workers()
    os.kill(pids[0], signal.SIGKILL)
    _wait(lambda: _ended(pids[0]), 5, "the killed worker is gone")
    answers = host.on_each_connection(40, lambda client: _score(client, rows))
    assert all(a.status_code == 200 and a.json() == {"predictions": expected} for a, _ in answers)

    again = host.workers(timeout_s=30)
    assert again[0] != pids[0] and again[1] == pids[1]
    answers = host.on_each_connection(40, lambda client: _score(client, rows))
    assert {worker for _, worker in answers} == set(range(WORKERS))  # the new worker 0 serves the saved spec
    assert all(a.status_code == 200 and a.json() == {"predictions": expected} for a, _ in answers)
    assert host.scored()["blue"] == before + 80  # the new worker 0 carries on its predecessor's counts


@pytest.mark.parametrize("stop", ["sigterm-supervisor", "sigterm-group", "sigkill-supervisor"])
def test_stopping_the_supervisor_ends_every_worker(stop: str, tmp_path: Path) -> None:
    host = WorkersHost(tmp_path / "state")
    host.start()
    assert host.process is not None
    try:
        pids = host.workers()
        if stop == "sigterm-supervisor":
            host.process.send_signal(signal.SIGTERM)
        elif stop == "sigterm-group":
            os.killpg(host.process.pid, signal.SIGTERM)
        else:  # the workers must not outlive a supervisor that cannot tell them to stop
            host.process.send_signal(signal.SIGKILL)
        code = host.process.wait(15)
        assert code == (-signal.SIGKILL if stop == "sigkill-supervisor" else 0)
        _wait(lambda: all(_ended(pid) for pid in pids.values()), 10, f"workers {pids} ended")
    finally:
        host.stop()
