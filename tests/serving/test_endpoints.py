"""Endpoints against a running server and its serving hosts, as their users see them.

One world for the module, a copy of the staged template (tests/support/serving_world.py) with a live
server of its own: staging holds versions 1 and 2 of `diabetes`, promoted through gate A, and the
config-declared endpoint `diabetes`. The tests run in file order and build on each other's allocation
where they say so.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mlgate.adapters.sql.models import Endpoint, ModelVersion, utcnow
from mlgate.domain.digest import tree_digest
from mlgate.interfaces.sdk.client import ApiError
from tests.support.load import WrkResult, run_wrk
from tests.support.project import METRICS_TOKEN, Project, bearer, start_server, stop_server
from tests.support.serving_world import FEATURES, Served, from_template, rows, score
from tests.support.worlds import Template

pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")


@pytest.fixture(scope="module")
def world(staged_template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served: Served = from_template(staged_template, tmp_path_factory.mktemp("serving"))
    try:
        yield served
    finally:
        stop_server(served.server)


@pytest.fixture(scope="module")
def key(world: Served) -> str:
    """A primary key for the config-declared endpoint (whose first keys nobody saw)."""
    with world.client("olu") as olu:
        rotated = olu.rotate_key("staging", "diabetes", "primary")
    assert rotated["key"].startswith(rotated["prefix"])
    return str(rotated["key"])


def test_a_deployed_version_answers_with_its_key_and_only_with_a_key(world: Served, key: str) -> None:
    with world.client("olu") as olu:
        shown = olu.deploy("staging", "diabetes", model="diabetes", version=1, slot="blue")
    assert shown["ready"] and shown["slots"][0] | {"ready": True} == shown["slots"][0]
    assert shown["slots"][0]["digest"] == world.digests[1] and shown["slots"][0]["traffic"] == 100
    assert shown["url"].endswith("/endpoints/diabetes/invocations") and shown["host"]["running"]
    # the verified copy sits under the environment's serving folder, named by its digest
    placed = world.project.settings.environment("staging").serving_dir / world.digests[1]
    assert (placed / "MLmodel").is_file()

    url = world.host_url()
    answer = score(url, key, rows())
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 5
    assert answer.headers["mlgate-deployment"] == "blue" and answer.headers["x-request-id"]

    missing = httpx.post(
        f"{url}/endpoints/diabetes/invocations", json={"dataframe_split": {"columns": FEATURES, "data": rows(1)}}
    )
    assert missing.status_code == 401 and "missing key" in missing.json()["message"]
    wrong = score(url, key[:-2] + "xx", rows(1))
    assert wrong.status_code == 401 and wrong.json()["error_code"]

    with world.client("vic") as vic:  # any role of staging scores through the API with its token
        through = vic.score(
            "staging",
            "diabetes",
            httpx.Request("POST", "/", json={"dataframe_split": {"columns": FEATURES, "data": rows()}}).content,
        )
    assert through.status_code == 200 and through.json() == answer.json()
    proxied = httpx.post(
        f"{world.url}/api/v1/environments/staging/endpoints/diabetes/invocations",
        json={"dataframe_split": {"columns": FEATURES, "data": rows(1)}},
        headers={**bearer(world.project.tokens["vic"]), "x-request-id": "visit-7"},
        timeout=30,
    )  # the host's id and the caller's own come back through the API
    assert proxied.headers["x-client-request-id"] == "visit-7" != proxied.headers["x-request-id"]

    # /metrics answers the token the server holds (it pushed the token's hash), and no one else
    assert httpx.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
    for refused in (httpx.get(f"{url}/metrics"), httpx.get(f"{url}/metrics", headers=bearer(key))):
        assert refused.status_code == 401 and "metrics token" in refused.json()["message"]


def test_keys_are_shown_once_stored_hashed_and_rotate_one_at_a_time(world: Served) -> None:
    with world.client("sam") as sam:  # a software developer may create endpoints in staging
        created = sam.create_endpoint("staging", "keys-demo")
        keys = created["keys"]
        assert keys["primary"] != keys["secondary"]
        assert sam.endpoint("staging", "keys-demo").get("keys") is None  # never shown again
        sam.deploy("staging", "keys-demo", model="diabetes", version=1, slot="blue")
    db = world.project.db()
    try:
        with db.read() as session:
            row = session.execute(select(Endpoint).where(Endpoint.name == "keys-demo")).scalar_one()
            stored = f"{row.primary_key_hash} {row.secondary_key_hash}"
    finally:
        db.dispose()
    assert keys["primary"] not in stored and keys["secondary"] not in stored
    logs = [world.project.path / "server.log", *world.project.settings.logs_dir.glob("*.log")]
    assert not any(keys["primary"] in p.read_text(errors="replace") for p in logs)

    url = world.host_url()

    def status(key: str) -> int:
        return httpx.post(
            f"{url}/endpoints/keys-demo/invocations",
            json={"dataframe_split": {"columns": FEATURES, "data": rows(1)}},
            headers={"Authorization": f"Bearer {key}"},
        ).status_code

    assert status(keys["primary"]) == 200 and status(keys["secondary"]) == 200
    with world.client("olu") as olu:
        new = olu.rotate_key("staging", "keys-demo", "primary")["key"]
    assert status(keys["primary"]) == 401  # the old primary is gone at once
    assert status(keys["secondary"]) == 200  # callers on the secondary never noticed
    assert status(new) == 200


def test_a_90_10_split_header_targeting_and_rollback(world: Served, key: str) -> None:
    with world.client("olu") as olu:
        olu.deploy("staging", "diabetes", model="diabetes", version=1, slot="blue", traffic=100)
        shown = olu.deploy("staging", "diabetes", model="diabetes", version=2, slot="green", traffic=10)
    assert {s["slot"]: s["traffic"] for s in shown["slots"]} == {"blue": 90, "green": 10}
    assert all(s["ready"] for s in shown["slots"])

    url = world.host_url()
    seen: Counter[str] = Counter()
    body = {"dataframe_split": {"columns": FEATURES, "data": rows(1)}}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(1000):
            answer = http.post(f"{url}/endpoints/diabetes/invocations", json=body)
            assert answer.status_code == 200
            seen[answer.headers["mlgate-deployment"]] += 1
        # green at 10%: 100 expected, standard deviation about 9.5; 5.5 deviations either way
        assert 48 <= seen["green"] <= 152, seen
        direct = http.post(f"{url}/endpoints/diabetes/invocations", json=body, headers={"mlgate-deployment": "green"})
        assert direct.headers["mlgate-deployment"] == "green"
        unknown = http.post(f"{url}/endpoints/diabetes/invocations", json=body, headers={"mlgate-deployment": "red"})
        assert unknown.status_code == 404 and "red" in unknown.json()["message"]

    with world.client("olu") as olu:
        swapped = olu.set_traffic("staging", "diabetes", {"blue": 0, "green": 100})
        assert {s["slot"]: s["traffic"] for s in swapped["slots"]} == {"blue": 0, "green": 100}
        assert score(url, key, rows(1)).headers["mlgate-deployment"] == "green"
        restored = olu.rollback_endpoint("staging", "diabetes")
        assert {s["slot"]: s["traffic"] for s in restored["slots"]} == {"blue": 90, "green": 10}
        assert restored["revision"] == swapped["revision"] + 1
        again = olu.rollback_endpoint("staging", "diabetes")  # one more step back: blue alone at 100
        assert {s["slot"]: s["traffic"] for s in again["slots"]} == {"blue": 100}
    assert score(url, key, rows(1)).headers["mlgate-deployment"] == "blue"


def test_bad_allocations_are_refused_and_change_nothing(world: Served, key: str) -> None:
    with world.client("olu") as olu:
        before = olu.endpoint("staging", "diabetes")
        refusals = {
            "sum": lambda: olu.set_traffic("staging", "diabetes", {"blue": 60}),
            "unknown": lambda: olu.set_traffic("staging", "diabetes", {"blue": 50, "purple": 50}),
            "mirror": lambda: olu.deploy("staging", "diabetes", model="diabetes", version=2, slot="green", mirror=60),
            "slot": lambda: olu.deploy("staging", "diabetes", model="diabetes", version=2, slot="Bad Slot"),
            "version": lambda: olu.deploy("staging", "diabetes", model="diabetes", version=9, slot="green"),
            "model": lambda: olu.deploy("staging", "diabetes", model="nosuch", version=1, slot="green"),
            "endpoint": lambda: olu.deploy("staging", "nosuch", model="diabetes", version=1, slot="green"),
        }
        messages = {}
        for name, attempt in refusals.items():
            with pytest.raises(ApiError) as refused:
                attempt()
            assert 400 <= refused.value.status_code < 500, (name, refused.value.message)
            messages[name] = refused.value.message
        after = olu.endpoint("staging", "diabetes")
    assert "sum to 100" in messages["sum"] and "60" in messages["sum"]
    assert "purple" in messages["unknown"]
    assert "version 9" in messages["version"] and "nosuch" in messages["model"] and "nosuch" in messages["endpoint"]
    assert after["revision"] == before["revision"] and after["slots"] == before["slots"]


def test_who_may_deploy(world: Served, project_template: Project) -> None:
    with world.client("dana") as dana, pytest.raises(ApiError) as refused:
        dana.deploy("staging", "diabetes", model="diabetes", version=1, slot="blue")
    assert refused.value.status_code == 403 and "deploy" in refused.value.message
    with world.client("vic") as vic, pytest.raises(ApiError) as refused:
        vic.rotate_key("staging", "diabetes", "primary")
    assert refused.value.status_code == 403

    # production: a version that did not come through gate B is refused, even to an operator
    db = world.project.db()
    try:
        with db.write() as session:
            source = session.execute(
                select(ModelVersion).where(ModelVersion.environment == "staging", ModelVersion.version == 1)
            ).scalar_one()
            columns = ("name", "digest", "model_uri", "signature", "input_example", "lineage", "profile", "card")
            session.add(
                ModelVersion(
                    **{c: getattr(source, c) for c in columns},
                    environment="production",
                    version=1,
                    created_by="system",
                    created_at=utcnow(),
                )
            )
    finally:
        db.dispose()
    with world.client("olu") as olu:
        olu.create_endpoint("production", "web")
        with pytest.raises(ApiError) as refused:
            olu.deploy("production", "web", model="diabetes", version=1, slot="blue")
    assert refused.value.status_code == 403 and "gate B" in refused.value.message


def test_mirrored_traffic_reaches_the_mirror_and_never_the_caller(world: Served, key: str) -> None:
    url = world.host_url()
    with world.client("olu") as olu:
        olu.deploy("staging", "diabetes", model="diabetes", version=2, slot="green", traffic=0)
        olu.set_traffic("staging", "diabetes", {"blue": 100, "green": 0}, mirror=("green", 50))
    before = _mirrored(url)
    for _ in range(100):
        answer = score(url, key, rows(1))
        assert answer.status_code == 200 and answer.headers["mlgate-deployment"] == "blue"
    time.sleep(0.5)
    copied = _mirrored(url) - before
    assert 25 <= copied <= 75, copied  # 50 expected, standard deviation 5
    with world.client("olu") as olu:
        cleared = olu.set_traffic("staging", "diabetes", {"blue": 100}, clear_mirror=True)
    assert cleared["mirror"] is None


def _mirrored(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN)).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mlgate_serving_requests_total") and 'kind="mirror"' in line and 'slot="green"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_blue_green_swap_under_wrk_load_fails_no_request(world: Served, key: str) -> None:
    url = world.host_url()
    with world.client("olu") as olu:
        olu.set_traffic("staging", "diabetes", {"blue": 100}, clear_mirror=True)
    result: list[WrkResult] = []
    body = {"dataframe_split": {"columns": FEATURES, "data": rows(1)}}
    swapped = threading.Event()
    load = threading.Thread(
        target=lambda: result.append(
            run_wrk(
                f"{url}/endpoints/diabetes/invocations",
                body=body,
                headers={"Authorization": f"Bearer {key}"},
                seconds=60,
                connections=8,
                pace_ms=5,
                until=swapped,
            )
        )
    )
    load.start()
    try:
        time.sleep(1.5)
        with world.client("olu") as olu:
            olu.deploy("staging", "diabetes", model="diabetes", version=2, slot="green", traffic=10)
            time.sleep(1)
            olu.set_traffic("staging", "diabetes", {"blue": 0, "green": 100})
            time.sleep(1)
            olu.rollback_endpoint("staging", "diabetes")
            time.sleep(1)
            olu.set_traffic("staging", "diabetes", {"blue": 100, "green": 0})
            time.sleep(0.5)
    finally:
        swapped.set()
        load.join(timeout=60)
    (figures,) = result
    assert figures.requests > 500, figures.raw
    assert figures.failed == 0, figures.raw
    assert figures.statuses == {200: figures.requests}
    assert figures.by_header.get("green", 0) > 0 and figures.by_header.get("blue", 0) > 0, figures.by_header


def test_a_tampered_artifact_is_refused_and_the_live_version_keeps_serving(world: Served, key: str) -> None:
    settings = world.project.settings
    staging = settings.environment("staging")
    url = world.host_url()
    with world.client("olu") as olu:
        olu.set_traffic("staging", "diabetes", {"blue": 100})
    # one byte changed in the registry's copy of version 2, and no verified copy placed yet
    placed = staging.serving_dir / world.digests[2]
    import shutil

    shutil.rmtree(placed, ignore_errors=True)
    pickles = [p for p in staging.artifact_root.rglob("model.*") if p.suffix in (".pkl", ".skops")]
    assert pickles
    originals = {p: p.read_bytes() for p in pickles}
    try:
        for path, data in originals.items():
            path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with world.client("olu") as olu, pytest.raises(ApiError) as refused:
            olu.deploy("staging", "diabetes", model="diabetes", version=2, slot="green", traffic=50)
        assert refused.value.status_code == 422
        assert world.digests[2] in refused.value.message and "digest" in refused.value.message
        assert score(url, key, rows(1)).status_code == 200
    finally:
        for path, data in originals.items():
            path.write_bytes(data)


def test_a_placed_copy_changed_on_disk_is_placed_again_at_the_next_push(world: Served, key: str) -> None:
    placed = world.project.settings.environment("staging").serving_dir / world.digests[1]
    card = next(placed.rglob("MLmodel"))
    original = card.read_text()
    card.write_text(original.replace("flavors:", "flavors:  # edited by hand", 1))
    with world.client("olu") as olu:
        olu.set_traffic("staging", "diabetes", {"blue": 100})  # a push: every deployed folder is checked
    assert card.read_text() == original and tree_digest(placed) == world.digests[1]
    assert score(world.host_url(), key, rows(1)).status_code == 200


def test_a_killed_host_is_restarted_with_its_deployments(world: Served, key: str) -> None:
    with world.client("vic") as vic:
        before = vic.endpoint("staging", "diabetes")
    pid = before["host"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        with world.client("vic") as vic:
            after = vic.endpoint("staging", "diabetes")
        if after["host"]["pid"] != pid and after["ready"]:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.5)
    assert after["host"]["restarts"] == before["host"]["restarts"] + 1
    assert after["url"] == before["url"]  # the same port: callers need no new address
    answer = score(world.host_url(), key, rows(1))
    assert answer.status_code == 200 and answer.headers["mlgate-deployment"] == "blue"


def test_scoring_goes_on_while_the_server_restarts_and_the_host_is_adopted(world: Served, key: str) -> None:
    url = world.host_url()
    with world.client("vic") as vic:
        pid = vic.serving_host("staging")["pid"]
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as http:
            while not stop.is_set():
                reply = http.post(
                    f"{url}/endpoints/diabetes/invocations",
                    json={"dataframe_split": {"columns": FEATURES, "data": rows(1)}},
                )
                answered += 1
                if reply.status_code != 200:
                    failures.append(reply.text)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        world.server.process.send_signal(signal.SIGTERM)
        world.server.process.wait(timeout=60)
        world.server = start_server(world.project)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert answered > 0 and failures == []
    with world.client("vic") as vic:
        host = vic.serving_host("staging")
    assert host["pid"] == pid and host["running"]  # adopted, not restarted
    assert score(url, key, rows(1)).status_code == 200  # and the new server's pushes kept the key


def test_stop_stops_the_serving_hosts(world: Served) -> None:
    with world.client("vic") as vic:
        assert not vic.serving_host("dev")["running"]  # dev has no endpoint: no host
        pids = [vic.serving_host(env)["pid"] for env in ("staging", "production")]
    stopped = world.project.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("serving host") == 2
    world.server.process.wait(timeout=30)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
