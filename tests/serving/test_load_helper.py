"""`tests.support.load.run_wrk` against a real host: its figures and counts are the host's answers, not defaults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import serving_host
from tests.support.load import NO_HEADER, lua_string, run_wrk
from tests.support.serving_host import COLUMNS, PRIMARY, Host, Models, patient_rows, spec

# MLflow warns about its own type hints while it imports; only that warning is silenced.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")

# The module-scoped fixture of two trained models (tests/support/serving_host.py), bound here for pytest.
models = serving_host.models


@pytest.fixture(scope="module")
def one_slot_host(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = Host(tmp_path_factory.mktemp("state"))
    running.start()
    one_slot = spec(models)
    del one_slot["endpoints"]["diabetes"]["slots"]["green"]
    try:
        assert running.push(one_slot).status_code == 200
        yield running
    finally:
        running.kill()


def _payload() -> dict[str, Any]:
    _, rows = patient_rows(1)
    return {"dataframe_split": {"columns": COLUMNS, "data": rows}}


def test_a_good_key_gets_only_2xx_from_the_one_slot(one_slot_host: Host) -> None:
    url = f"{one_slot_host.url}/endpoints/diabetes/invocations"
    result = run_wrk(url, body=_payload(), headers={"Authorization": f"Bearer {PRIMARY}"}, seconds=2)
    assert result.requests > 0 and result.non_2xx == 0, result.raw
    assert result.failed == 0 and result.requests_per_s > 0
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.statuses == {200: result.requests}
    assert result.by_header == {"blue": result.requests}


def test_a_wrong_key_makes_every_response_count_as_non_2xx(one_slot_host: Host) -> None:
    url = f"{one_slot_host.url}/endpoints/diabetes/invocations"
    result = run_wrk(url, body=_payload(), headers={"Authorization": "Bearer not-the-key"}, seconds=2)
    assert result.requests > 0 and result.non_2xx == result.requests, result.raw
    assert result.statuses == {401: result.requests}
    assert result.by_header == {NO_HEADER: result.requests}  # refused before a slot was chosen


def test_lua_strings_carry_any_bytes() -> None:
    assert lua_string('a "b" \\ c') == '"a \\034b\\034 \\092 c"'
    assert lua_string(b"\n\x00\xff9") == '"\\010\\000\\2559"'
