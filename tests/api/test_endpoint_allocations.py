"""Endpoint allocations as data, and the serving supervisor against the fake serving backend."""

from __future__ import annotations

import pytest

from mlgate.adapters.serving.fake import FakeServingBackend
from mlgate.adapters.sql import migrate
from mlgate.domain import endpoints as allocations
from mlgate.domain.endpoints import Allocation, Mirror
from mlgate.errors import ValidationError
from mlgate.services.release import endpoints
from mlgate.services.release.serving import Serving
from tests.support.project import Project


def _deploy(current: Allocation, slot: str, version: int, traffic: int | None = None, **kw: float) -> Allocation:
    return allocations.deploy(
        current,
        slot=slot,
        model_version_id=version,
        model="m",
        version=version,
        digest=f"d{version}",
        traffic=traffic,
        mirror=kw.get("mirror"),
    )


def test_the_first_slot_takes_everything_and_a_new_one_starts_at_zero() -> None:
    first = _deploy(Allocation(), "blue", 1)
    assert first.weights == {"blue": 100}
    second = _deploy(first, "green", 2)
    assert second.weights == {"blue": 100, "green": 0}
    replaced = _deploy(second, "blue", 3)  # a new version in place keeps the slot's weight
    assert replaced.weights == {"blue": 100, "green": 0} and replaced.get("blue").version == 3  # type: ignore[union-attr]


def test_a_share_scales_the_others_to_the_rest() -> None:
    two = _deploy(_deploy(Allocation(), "blue", 1), "green", 2, traffic=10)
    assert two.weights == {"blue": 90, "green": 10}
    three = allocations.shift(
        _deploy(two, "red", 3), {"blue": 50, "green": 25, "red": 25}
    )  # red joined at 0, then weights set
    assert three.weights == {"blue": 50, "green": 25, "red": 25}
    more = _deploy(three, "red", 3, traffic=40)
    assert more.weights == {"blue": 40, "green": 20, "red": 40} and sum(more.weights.values()) == 100
    odd = _deploy(allocations.shift(three, {"blue": 34, "green": 33, "red": 33}), "red", 3, traffic=0)
    assert sum(odd.weights.values()) == 100 and odd.weights["red"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: _deploy(Allocation(), "blue", 1, traffic=50), "only slot"),
        (lambda a: _deploy(a, "Blue Slot", 1), "invalid slot name"),
        (lambda a: _deploy(a, "green", 2, traffic=101), "from 0 to 100"),
        (lambda a: _deploy(a, "green", 2, mirror=51), "from 0 to 50"),
        (lambda a: allocations.shift(a, {"blue": 70}), "sum to 100"),
        (lambda a: allocations.shift(a, {"blue": 50, "nope": 50}), "nope"),
        (lambda a: allocations.shift(a, {"blue": 100}, mirror=Mirror("nope", 5)), "nope"),
        (lambda a: allocations.shift(Allocation(), {"blue": 100}), "no deployment"),
    ],
)
def test_bad_changes_name_the_problem(change: object, message: str) -> None:
    start = _deploy(Allocation(), "blue", 1)
    with pytest.raises(ValidationError) as refused:
        change(start)  # type: ignore[operator]
    assert message in refused.value.message


def test_mirror_is_set_kept_and_cleared() -> None:
    two = _deploy(_deploy(Allocation(), "blue", 1), "green", 2, mirror=20)
    assert two.mirror == Mirror("green", 20.0)
    kept = allocations.shift(two, {"blue": 80, "green": 20})
    assert kept.mirror == Mirror("green", 20.0)
    cleared = allocations.shift(two, {"blue": 100}, mirror=None)
    assert cleared.mirror is None and cleared.weights == {"blue": 100, "green": 0}
    assert Allocation.from_json(two.slots_json(), two.mirror_json()) == two


def test_the_supervisor_restarts_a_dead_host_and_pushes_hashes_never_keys(project: Project) -> None:
    settings = project.settings
    db = project.db()
    try:
        migrate.upgrade(db)
        fake = FakeServingBackend()
        serving = Serving(settings, db, fake, upstream=lambda env: "http://unused")
        serving.bring_up()
        assert fake.started == set() and fake.pushes == []  # no endpoint anywhere: nothing to serve
        _, keys = serving.create("staging", "web", actor="olu", description="")
        assert endpoints.get(db, "staging", "web").key_prefixes["primary"] == keys.primary[:12]
        assert fake.started == {"staging"} and [env for env, _ in fake.pushes] == ["staging"]  # its first endpoint

        fake.started.discard("staging")  # the host died
        fake.pushes.clear()
        serving.tick()
        assert "staging" in fake.started and [env for env, _ in fake.pushes] == ["staging"]

        fake.refuse = "host says no"
        fake.started.discard("staging")
        serving.tick()  # the push fails: the supervisor tries again next round
        fake.refuse = None
        fake.pushes.clear()
        serving.tick()
        assert [env for env, _ in fake.pushes] == ["staging"]
        pushed = str(fake.pushes)
        assert keys.primary not in pushed and keys.secondary not in pushed
    finally:
        db.dispose()
