"""`mlgate endpoints`, `mlgate deploy` and `mlgate score` against a running server and its serving hosts."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.project import MLGATE, stop_server
from tests.support.serving_world import FEATURES, Served, clean_env, from_template, rows
from tests.support.worlds import Template

pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")

KEY = re.compile(r"mlgk_[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def world(staged_template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served: Served = from_template(staged_template, tmp_path_factory.mktemp("cli-serving"))
    try:
        yield served
    finally:
        stop_server(served.server)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def flat(text: str) -> str:
    """A message as one line: click's error box and rich's wrapping taken out."""
    return " ".join(text.replace("│", " ").split())


def host_score(url: str, key: str, data: list[list[Any]]) -> httpx.Response:
    payload = {"dataframe_split": {"columns": FEATURES, "data": data}}
    return httpx.post(url, json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def two_slots(world: Served, name: str) -> dict[str, Any]:
    """An endpoint with version 1 in blue and 2 in green at 10%, set up through the SDK; its keys."""
    with world.client("olu") as olu:
        keys: dict[str, Any] = olu.create_endpoint("staging", name)["keys"]
        olu.deploy("staging", name, model="diabetes", version=1, slot="blue")
        olu.deploy("staging", name, model="diabetes", version=2, slot="green", traffic=10)
    return keys


def show(world: Served, name: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(ok(world.cli("endpoints", "show", name, "--env", "staging", "--json")))
    return shown


def test_create_deploy_show_and_list(world: Served) -> None:
    created = ok(world.cli("endpoints", "create", "risk", "--env", "staging", "--description", "the [risk] score"))
    assert "shown once, store them now" in created
    keys = KEY.findall(created)
    assert len(keys) == 2 and keys[0] != keys[1]

    first = ok(world.cli("deploy", "diabetes:1", "--env", "staging", "--endpoint", "risk", "--slot", "blue"))
    assert "diabetes:1 is ready in slot blue of risk (staging)" in first
    assert "blue=v1:100%" in first
    second = world.cli(
        "deploy", "diabetes:2", "--env", "staging", "--endpoint", "risk", "--slot", "green", "--traffic", "10"
    )
    assert "diabetes:2 is ready in slot green" in ok(second)
    assert "blue=v1:90% green=v2:10%" in second.stdout

    shown = show(world, "risk")
    assert [(s["slot"], s["model"], s["version"], s["traffic"], s["ready"]) for s in shown["slots"]] == [
        ("blue", "diabetes", 1, 90, True),
        ("green", "diabetes", 2, 10, True),
    ]
    assert shown["ready"] and shown["mirror"] is None and shown["can_roll_back"]
    assert keys[0].startswith(shown["key_prefixes"]["primary"])
    assert keys[1].startswith(shown["key_prefixes"]["secondary"])

    text = ok(world.cli("endpoints", "show", "risk", "--env", "staging"))
    for expected in (
        "the [risk] score",
        "blue=v1:90% green=v2:10%",
        shown["url"],
        shown["v2_url"],
        f"primary {shown['key_prefixes']['primary']}",
        f"revision {shown['revision']} by olu",
        f"pid {shown['host']['pid']}",
        "diabetes:2",
    ):
        assert expected in text, (expected, text)

    listed = ok(world.cli("endpoints", "list", "--env", "staging"))
    line = next(line for line in listed.splitlines() if " risk " in line)
    assert "blue=v1:90% green=v2:10%" in line and "yes" in line and shown["url"] in line
    names = [e["name"] for e in json.loads(ok(world.cli("endpoints", "list", "--env", "staging", "--json")))]
    assert "risk" in names and "diabetes" in names

    for key in keys:  # both printed keys open the serving host
        answer = host_score(shown["url"], key, rows())
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 5


def test_traffic_refuses_bad_weights_and_rollback_restores(world: Served) -> None:
    two_slots(world, "ab")
    bad = world.cli("endpoints", "traffic", "ab", "--env", "staging", "blue=90", "green:10")
    assert bad.returncode == 2
    assert "'WEIGHTS': expected SLOT=PERCENT, like blue=90, got 'green:10'" in flat(bad.stderr)
    fraction = world.cli("endpoints", "traffic", "ab", "--env", "staging", "blue=89.5", "green=10.5")
    assert fraction.returncode == 2 and "'blue=89.5' must be a whole number" in flat(fraction.stderr)
    bad_mirror = world.cli("endpoints", "traffic", "ab", "--env", "staging", "--mirror", "green")
    assert bad_mirror.returncode == 2 and "'--mirror': expected SLOT=PERCENT" in flat(bad_mirror.stderr)

    short = world.cli("endpoints", "traffic", "ab", "--env", "staging", "blue=50", "green=40")
    assert short.returncode == 1
    assert "weights must sum to 100, got blue=50 + green=40 = 90" in flat(short.stderr)
    assert show(world, "ab")["revision"] == 2  # nothing changed

    shifted = world.cli("endpoints", "traffic", "ab", "--env", "staging", "blue=100", "green=0", "--mirror", "green=20")
    assert "blue=v1:100% green=v2:0%; mirror green 20%" in ok(shifted)
    assert show(world, "ab")["mirror"] == {"slot": "green", "percent": 20.0}

    restored = ok(world.cli("endpoints", "rollback", "ab", "--env", "staging"))
    assert "rolled back" in restored and "blue=v1:90% green=v2:10%; mirror -" in restored
    shown = show(world, "ab")
    assert [(s["slot"], s["traffic"]) for s in shown["slots"]] == [("blue", 90), ("green", 10)]
    assert shown["mirror"] is None


def test_rotated_key_is_refused_by_the_host(world: Served) -> None:
    keys = two_slots(world, "rotating")
    url = show(world, "rotating")["url"]
    assert host_score(url, keys["primary"], rows()).status_code == 200

    rotated = ok(world.cli("endpoints", "rotate-key", "rotating", "--env", "staging", "--which", "primary"))
    assert "shown once, store it now" in rotated
    (new_key,) = KEY.findall(rotated)
    refused = host_score(url, keys["primary"], rows())
    assert refused.status_code == 401, refused.text
    assert host_score(url, new_key, rows()).status_code == 200
    assert host_score(url, keys["secondary"], rows()).status_code == 200


def test_score_csv_and_json_through_the_api_and_with_a_key(world: Served, tmp_path: Path) -> None:
    with world.client("olu") as olu:
        key = olu.create_endpoint("staging", "scored")["keys"]["primary"]
        olu.deploy("staging", "scored", model="diabetes", version=1, slot="blue")
        data = rows(12, seed=3)
        payload = json.dumps({"dataframe_split": {"columns": FEATURES, "data": data}}).encode()
        reference = olu.score("staging", "scored", payload).json()["predictions"]
    assert len(reference) == 12

    table = tmp_path / "rows.csv"
    with table.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(FEATURES)
        writer.writerows(data)
    records = tmp_path / "rows.json"
    records.write_text(json.dumps([dict(zip(FEATURES, row, strict=True)) for row in data]))
    host = world.host_url()

    def predictions(done: subprocess.CompletedProcess[str]) -> list[Any]:
        return [json.loads(line) for line in ok(done).splitlines()]

    base = ("score", "--env", "staging", "--endpoint", "scored")
    assert predictions(world.cli(*base, "--data", str(table))) == reference
    assert predictions(world.cli(*base, "--data", str(records))) == reference
    assert predictions(world.cli(*base, "--data", str(table), "--key", key)) == reference
    as_json = json.loads(ok(world.cli(*base, "--data", str(records), "--key", key, "--json")))
    assert as_json == {"predictions": reference}

    # With a key and the host's address, no mlgate server or token is involved; `-` reads stdin.
    direct = subprocess.run(
        [MLGATE, *base, "--data", "-", "--key", key, "--host-url", host],
        input=records.read_text(),
        cwd=world.root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert predictions(direct) == reference

    wrong = world.cli(*base, "--data", str(table), "--key", "mlgk_" + "x" * 40)
    assert wrong.returncode == 1 and "error (401" in wrong.stderr
    untyped = tmp_path / "rows.txt"
    untyped.write_text("1,2")
    refused = world.cli(*base, "--data", str(untyped))
    assert refused.returncode == 2 and "expected a .json or .csv file" in flat(refused.stderr)


def test_data_scientist_may_not_deploy(world: Served) -> None:
    denied = world.cli("deploy", "diabetes:1", "--env", "staging", "--endpoint", "risk", "--slot", "blue", user="dana")
    assert denied.returncode == 1
    assert "dana may not do this: 'deploy' in 'staging'" in flat(denied.stderr)
    malformed = world.cli("deploy", "diabetes", "--env", "staging", "--endpoint", "risk", "--slot", "blue")
    assert malformed.returncode == 2
    assert "expected NAME:VERSION, like diabetes:1, got 'diabetes'" in flat(malformed.stderr)
