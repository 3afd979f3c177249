"""The serving host during a rollout: the stable slot answers for a failing canary, the new slot is
compared with the stable one on a shadowed share of the requests, and the admin stats route gives the
per-slot and shadow counters a rollout judges; plus the rollout rules that read them."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.domain import rollout_quality as quality
from mlgate.domain import rollouts as rules
from mlgate.domain.digest import tree_digest
from tests.support.serving_host import COLUMNS, PRIMARY, SECONDARY, TYPES, Host, patient_frame, place_model, sha256_hex

pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")


def _picky_model(tmp: Path) -> tuple[Path, str]:
    """A classifier that raises when the first feature is negative, saved as the server would place it."""
    import cloudpickle
    from mlflow.models import ModelSignature
    from mlflow.sklearn import save_model
    from mlflow.types import ColSpec, Schema
    from sklearn.linear_model import LogisticRegression

    class Picky(LogisticRegression):  # type: ignore[misc]
        def predict(self, X: Any) -> Any:
            if (np.asarray(X, dtype=float)[:, 0] < 0).any():
                raise ValueError("a negative first feature")
            return super().predict(X)

    frame, label = patient_frame(300, 5)
    model = Picky(max_iter=2000).fit(frame, label)
    signature = ModelSignature(
        inputs=Schema([ColSpec(t, name) for t, name in zip(TYPES, COLUMNS, strict=True)]),
        outputs=Schema([ColSpec("long")]),
    )
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        save_model(
            model,
            str(tmp / "build-picky"),
            signature=signature,
            input_example=frame.head(3),
            serialization_format="cloudpickle",
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    digest = tree_digest(tmp / "build-picky")
    target = tmp / "serving" / digest
    shutil.copytree(tmp / "build-picky", target)
    return target, digest


@pytest.fixture(scope="module")
def slots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("models")
    good_dir, good_digest, _ = place_model(tmp, c=1.0, seed=1)
    return {"blue": (good_dir, good_digest), "green": _picky_model(tmp)}


def _spec(
    slots: dict[str, tuple[Path, str]],
    weights: dict[str, int],
    stable: str | None,
    shadow: dict[str, Any] | None = None,
) -> dict[str, Any]:
    endpoint: dict[str, Any] = {
        "key_hashes": [sha256_hex(PRIMARY), sha256_hex(SECONDARY)],
        "slots": {
            name: {"model_dir": str(folder), "digest": digest, "traffic": weights[name]}
            for name, (folder, digest) in slots.items()
        },
    }
    if stable is not None:
        endpoint["stable"] = stable
    if shadow is not None:
        endpoint["shadow"] = shadow
    return {"endpoints": {"diabetes": endpoint}}


@pytest.fixture(scope="module")
def host(slots: dict[str, tuple[Path, str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = Host(tmp_path_factory.mktemp("state"))
    running.start()
    yield running
    running.kill()


def _stats(host: Host) -> dict[str, Any]:
    with host.admin() as admin:
        answer = admin.get("/admin/stats")
    assert answer.status_code == 200, answer.text
    stats: dict[str, Any] = answer.json()
    return stats


def _payload(first: int, seed: int = 11) -> dict[str, Any]:
    frame, _ = patient_frame(2, seed)
    rows = [[int(v) if t == "long" else float(v) for v, t in zip(row, TYPES, strict=True)] for row in frame.values]
    rows[0][0] = first
    return {"dataframe_split": {"columns": COLUMNS, "data": rows}}


def test_the_stable_slot_answers_for_a_failing_canary_and_the_failures_count_against_it(
    host: Host, slots: dict[str, tuple[Path, str]]
) -> None:
    assert host.push(_spec(slots, {"blue": 50, "green": 50}, stable="blue")).status_code == 200
    before = _stats(host)
    answers = [host.score(_payload(-1), timeout=30) for _ in range(60)]
    assert [a.status_code for a in answers] == [200] * 60, [a.text for a in answers if a.status_code != 200]
    assert {a.headers["mlgate-deployment"] for a in answers} == {"blue"}
    after = _stats(host)
    green = rules.window(before, after, endpoint="diabetes", slot="green")
    blue = rules.window(before, after, endpoint="diabetes", slot="blue")
    assert green.requests == green.errors > 5  # about half of the 60 went to green first, and failed there
    assert blue.requests == 60 and blue.errors == 0
    assert blue.p95_ms is not None and 0 < blue.p95_ms < 1000
    assert green.error_rate == 1.0

    # good input is answered by whichever slot the split chose
    fine = [host.score(_payload(3), timeout=30) for _ in range(30)]
    assert all(a.status_code == 200 for a in fine)
    assert {a.headers["mlgate-deployment"] for a in fine} == {"blue", "green"}


def test_no_retry_for_a_named_slot_an_input_error_or_without_a_stable_slot(
    host: Host, slots: dict[str, tuple[Path, str]]
) -> None:
    assert host.push(_spec(slots, {"blue": 0, "green": 100}, stable="blue")).status_code == 200
    named = host.score(_payload(-1), slot="green", timeout=30)
    assert named.status_code == 500 and "slot 'green' failed" in named.json()["message"]
    before = _stats(host)
    bad_input = host.score({"dataframe_split": {"columns": COLUMNS[:-1], "data": [[1, 2, 3, 4.0, 0.5]]}}, timeout=30)
    assert bad_input.status_code in (400, 422), bad_input.text
    after = _stats(host)
    assert rules.window(before, after, endpoint="diabetes", slot="blue").requests == 0  # not retried on blue

    assert host.push(_spec(slots, {"blue": 0, "green": 100}, stable=None)).status_code == 200
    assert host.score(_payload(-1), timeout=30).status_code == 500


def _compared(host: Host, before: dict[str, Any], rows: int) -> quality.QualityWindow:
    """The green slot's shadow window once `rows` rows were compared or failed (the shadow runs after the
    answers)."""
    deadline = time.monotonic() + 10
    while True:
        observed = quality.quality_window(before, _stats(host), endpoint="diabetes", slot="green")
        if observed.compared + observed.failed >= rows or time.monotonic() > deadline:
            return observed
        time.sleep(0.05)


def test_the_new_slot_is_compared_with_the_stable_one_off_the_callers_path(
    host: Host, slots: dict[str, tuple[Path, str]]
) -> None:
    shadow = {"slot": "green", "percent": 100, "tolerance": 0.0}
    assert host.push(_spec(slots, {"blue": 100, "green": 0}, stable="blue", shadow=shadow)).status_code == 200
    payloads = [_payload(3, seed) for seed in range(20)]
    # What each slot answers when asked by name (a named slot is never shadowed): the expected disagreement.
    named = {s: [host.score(p, slot=s, timeout=30).json()["predictions"] for p in payloads] for s in ("blue", "green")}
    expected = sum(
        b != g for pb, pg in zip(named["blue"], named["green"], strict=True) for b, g in zip(pb, pg, strict=True)
    )
    before = _stats(host)
    answers = [host.score(p, timeout=30) for p in payloads]
    assert {(a.status_code, a.headers["mlgate-deployment"]) for a in answers} == {(200, "blue")}
    assert [a.json()["predictions"] for a in answers] == named["blue"]  # the callers got the stable answers
    observed = _compared(host, before, 40)
    assert 0 < expected < 40, named  # the two models answer differently on some rows
    assert (observed.compared, observed.disagreed, observed.failed) == (40, expected, 0), observed
    assert observed.drift is not None and observed.drift >= 0.0

    # the new slot failing on the shadow copy is counted, never seen by the caller; unshadowed at percent 0
    before = _stats(host)
    failing = [host.score(_payload(-1), timeout=30) for _ in range(5)]
    assert [a.status_code for a in failing] == [200] * 5
    observed = _compared(host, before, 10)
    assert (observed.compared, observed.failed) == (0, 10), observed
    off = {**shadow, "percent": 0}
    assert host.push(_spec(slots, {"blue": 100, "green": 0}, stable="blue", shadow=off)).status_code == 200
    before = _stats(host)
    assert all(host.score(p, timeout=30).status_code == 200 for p in payloads[:10])
    assert quality.quality_window(before, _stats(host), endpoint="diabetes", slot="green").compared == 0
    refused = host.push(_spec(slots, {"blue": 100, "green": 0}, stable=None, shadow=shadow))
    assert refused.status_code == 422 and "shadow needs the endpoint's stable slot" in refused.text
    refused = host.push(_spec(slots, {"blue": 100, "green": 0}, stable="blue", shadow={**shadow, "slot": "blue"}))
    assert refused.status_code == 422 and "endpoints.diabetes.shadow.slot" in refused.text


def test_the_spec_names_an_existing_stable_slot_and_stats_need_the_admin_token(
    host: Host, slots: dict[str, tuple[Path, str]]
) -> None:
    refused = host.push(_spec(slots, {"blue": 100, "green": 0}, stable="red"))
    assert refused.status_code == 422 and "endpoints.diabetes.stable" in refused.text
    with host.admin(token=None) as admin:
        assert admin.get("/admin/stats").status_code == 401
    with host.admin(token="nope") as admin:
        wrong = admin.get("/admin/stats")
    assert wrong.status_code == 401


def test_rollout_rules() -> None:
    bounds = [0.001, 0.002, 0.004]
    assert rules.percentile(bounds, [0, 10, 0, 0], 0.95) == pytest.approx(0.001 + 0.001 * 0.95)
    assert rules.percentile(bounds, [0, 0, 0, 3], 0.5) == 0.004  # the overflow bucket reads as the last bound
    assert rules.percentile(bounds, [0, 0, 0, 0], 0.95) is None

    def snap(requests: int, errors: int, counts: list[int]) -> dict[str, Any]:
        slot = {"requests": requests, "errors": errors, "latency_counts": counts}
        return {"latency_buckets_s": bounds, "endpoints": {"web": {"green": slot}}}

    observed = rules.window(snap(10, 1, [10, 0, 0, 0]), snap(110, 3, [10, 0, 0, 100]), endpoint="web", slot="green")
    assert (observed.requests, observed.errors, observed.p95_ms) == (100, 2, 4.0)
    restarted = rules.window(snap(500, 9, [500, 0, 0, 0]), snap(20, 0, [20, 0, 0, 0]), endpoint="web", slot="green")
    assert restarted.requests == 20 and restarted.errors == 0

    slo = rules.Slo(max_error_rate=0.01, p95_ms=3.0, min_requests=10)
    reason = rules.breach(observed, slo, traffic=10, slot="green")
    assert reason is not None and "error rate 2.00%" in reason and "max_error_rate 1.00%" in reason
    slow = rules.breach(rules.Window(100, 0, 4.0), slo, traffic=50, slot="green")
    assert slow is not None and "p95 latency 4.0 ms" in slow and "p95_ms 3 ms" in slow
    assert rules.breach(rules.Window(9, 9, 99.0), slo, traffic=10, slot="green") is None  # too few to judge
    assert rules.breach(rules.Window(100, 1, 2.0), slo, traffic=10, slot="green") is None

    assert rules.stable_slot({}) is None and rules.target_slot(None) == "blue"
    assert rules.stable_slot({"blue": 0, "green": 100}) == "green" and rules.target_slot("green") == "blue"
    assert rules.target_slot(rules.stable_slot({"blue": 100, "green": 0})) == "green"
    assert rules.traffic_steps("blue-green", [10, 50, 100]) == [100]
    assert rules.traffic_steps("canary", [10, 50, 100]) == [10, 50, 100]
