"""The `endpoint-tests` check: the candidate deployed at 0% to a slot of a staging endpoint and tested
through the slot header with the server's own key: smoke, every payload format agreeing, malformed
input refused, predictions equal to the staging copy's own, and the p95 latency within its budget.

It runs in the server (on the staging pipeline's thread) because it needs the serving object and key;
the model's local predictions come from the sandbox (`services.registration.scoring`), so the server never loads
the model itself and the model's code never runs with the server's powers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion
from mlgate.config import EndpointTestsConfig, Settings
from mlgate.domain.endpoints import SlotAllocation
from mlgate.domain.permissions import SYSTEM
from mlgate.errors import NotFoundError, ValidationError
from mlgate.services.registration.scoring import SandboxScorer
from mlgate.services.release import endpoints
from mlgate.services.release.serving import Serving

SLOT_HEADER = "mlgate-deployment"
REQUEST_TIMEOUT_S = 30.0
LOCAL_PREDICT_TIMEOUT_S = 300.0
TOLERANCE = 1e-6


@dataclass
class Outcome:
    passed: bool = True
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.log.append(line)

    def fail(self, problem: str) -> None:
        self.passed = False
        self.problems.append(problem)
        self.log.append(f"FAILED: {problem}")


def _flat(answer: Any) -> list[Any]:
    """An answer's predictions as one flat list, whatever the protocol's shape."""
    if isinstance(answer, dict) and "outputs" in answer:
        return [v for out in answer["outputs"] for v in out.get("data", [])]
    if isinstance(answer, dict) and "predictions" in answer:
        answer = answer["predictions"]
    flat: list[Any] = []
    stack = answer if isinstance(answer, list) else [answer]
    for item in stack:
        if isinstance(item, list):
            flat.extend(_flat(item))
        elif isinstance(item, dict):
            flat.extend(item.values())
        else:
            flat.append(item)
    return flat


def _same(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, int | float) and isinstance(y, int | float):
            if not math.isclose(float(x), float(y), rel_tol=TOLERANCE, abs_tol=TOLERANCE):
                return False
        elif x != y:
            return False
    return True


def _v2_type(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def payloads(columns: list[str], data: list[list[Any]]) -> dict[str, Any]:
    """The same rows in every MLflow scoring format."""
    records = [dict(zip(columns, row, strict=True)) for row in data]
    return {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": data}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [row[i] for row in data] for i, c in enumerate(columns)}},
    }


def _example(row: ModelVersion) -> tuple[list[str], list[list[Any]]] | None:
    example = row.input_example
    if isinstance(example, dict) and isinstance(example.get("columns"), list) and isinstance(example.get("data"), list):
        return [str(c) for c in example["columns"]], [list(r) for r in example["data"]]
    if isinstance(example, list) and example and all(isinstance(r, dict) for r in example):
        columns = list(example[0])
        return columns, [[r.get(c) for c in columns] for r in example]
    return None


def _local_predictions(
    settings: Settings, model_dir: Path, columns: list[str], data: list[list[Any]], *, what: str
) -> list[Any]:
    """The staging copy's own answers, scored in the sandbox (the server never loads a model)."""
    scorer = SandboxScorer(settings, timeout_s=LOCAL_PREDICT_TIMEOUT_S)
    return scorer(model_dir, {"columns": columns, "data": data}, what=what).flat()


def run(
    db: Database,
    settings: Settings,
    serving: Serving,
    config: EndpointTestsConfig,
    *,
    env: str,
    model_version_id: int,
) -> Outcome:
    """Deploy the version to the configured slot, then test it there: smoke, formats, malformed input,
    predictions against the staging copy's own, latency. Stops at the first test the rest depend on."""
    outcome = Outcome()
    with db.read() as session:
        row = session.get(ModelVersion, model_version_id)
        assert row is not None
        slot = SlotAllocation(config.slot, model_version_id, row.name, row.version, row.digest, 0)
        example = _example(row)
    name = config.endpoint or slot.model
    _deploy(db, serving, env=env, endpoint=name, slot=slot, outcome=outcome)
    if example is None:
        outcome.fail("the version has no input example (split JSON) to test the endpoint with")
        return outcome
    columns, data = example
    data = data[: config.sample_rows]
    base = serving.backend.url(env).rstrip("/")
    invocations = f"{base}/endpoints/{name}/invocations"
    headers = {"Authorization": f"Bearer {serving.internal_key}", SLOT_HEADER: config.slot}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=headers) as http:
        formats = payloads(columns, data)
        smoke = http.post(invocations, json=formats["dataframe_split"])
        if smoke.status_code != 200:
            outcome.fail(f"smoke: the input example got {smoke.status_code}: {smoke.text[:300]}")
            return outcome
        reference = _flat(smoke.json())
        outcome.note(f"smoke: {len(data)} rows answered 200")
        v2 = f"{base}/v2/models/{name}/versions/{config.slot}/infer"
        _test_formats(http, invocations=invocations, v2=v2, formats=formats, reference=reference, outcome=outcome)
        _test_malformed(http, invocations=invocations, columns=columns, data=data, outcome=outcome)
        local_ok = _test_local(
            settings, serving, env=env, slot=slot, columns=columns, data=data, reference=reference, outcome=outcome
        )
        if not local_ok:
            return outcome
        _test_latency(http, invocations=invocations, body=formats["dataframe_split"], config=config, outcome=outcome)
    return outcome


def _deploy(db: Database, serving: Serving, *, env: str, endpoint: str, slot: SlotAllocation, outcome: Outcome) -> None:
    """The version into its slot of the endpoint (made if missing): all the traffic if the endpoint serves
    nothing else, none otherwise."""
    try:
        view = endpoints.get(db, env, endpoint)
    except NotFoundError:
        description = f"created by mlgate for the endpoint tests of {slot.model}"
        serving.create(env, endpoint, actor=SYSTEM, description=description)
        view = endpoints.get(db, env, endpoint)
        outcome.note(f"created endpoint '{endpoint}' in {env}")
    slots = view.allocation.slots
    first = not slots or all(s.slot == slot.slot for s in slots)
    serving.deploy(
        env,
        endpoint,
        model=slot.model,
        version=slot.version,
        slot=slot.slot,
        traffic=None if first else 0,
        mirror=None,
        actor=SYSTEM,
    )
    where = f"slot '{slot.slot}' of '{endpoint}' ({'100' if first else '0'}%)"
    outcome.note(f"deployed {slot.model}:{slot.version} to {where}")


def _test_formats(
    http: httpx.Client,
    *,
    invocations: str,
    v2: str,
    formats: dict[str, Any],
    reference: list[Any],
    outcome: Outcome,
) -> None:
    """Every MLflow payload format, and the Open Inference Protocol, answer as the smoke test did."""
    for label, body in formats.items():
        answer = http.post(invocations, json=body)
        if answer.status_code != 200 or not _same(_flat(answer.json()), reference):
            outcome.fail(f"format {label}: {answer.status_code}, answers differ from dataframe_split")
        else:
            outcome.note(f"format {label}: same answers")
    tensors = [
        {"name": c, "datatype": _v2_type(v), "shape": [len(v)], "data": v}
        for c, v in formats["inputs"]["inputs"].items()
    ]
    answer = http.post(v2, json={"inputs": tensors})
    if answer.status_code != 200 or not _same(_flat(answer.json()), reference):
        outcome.fail(f"format OIP v2: {answer.status_code}, answers differ from dataframe_split: {answer.text[:200]}")
    else:
        outcome.note("format OIP v2: same answers")


def _test_malformed(
    http: httpx.Client, *, invocations: str, columns: list[str], data: list[list[Any]], outcome: Outcome
) -> None:
    """A body that is not JSON, and rows missing a column, are refused with a 4xx."""
    malformed = {
        "a body that is not JSON": http.post(
            invocations, content=b"not json", headers={"content-type": "application/json"}
        ),
        f"a row missing column '{columns[0]}'": http.post(
            invocations, json={"dataframe_split": {"columns": columns[1:], "data": [r[1:] for r in data]}}
        ),
    }
    for label, answer in malformed.items():
        if 400 <= answer.status_code < 500:
            outcome.note(f"malformed ({label}): {answer.status_code}")
        else:
            outcome.fail(f"malformed input ({label}) got {answer.status_code}, expected a 4xx")


def _test_local(
    settings: Settings,
    serving: Serving,
    *,
    env: str,
    slot: SlotAllocation,
    columns: list[str],
    data: list[list[Any]],
    reference: list[Any],
    outcome: Outcome,
) -> bool:
    """The endpoint's answers equal the staging copy's own, scored in the sandbox; False if those could
    not be had (the latency figure is then not worth taking)."""
    try:
        folder = serving.place(settings.environment(env), slot)
        local = _local_predictions(settings, folder, columns, data, what=f"{slot.model}:{slot.version}")
    except ValidationError as exc:
        outcome.fail(f"the staging copy's own predictions failed: {exc.message}")
        return False
    if _same(local, reference):
        outcome.note(f"predictions equal the staging copy's own on {len(data)} rows")
    else:
        outcome.fail(f"the endpoint's predictions differ from the staging copy's own: {reference[:5]} vs {local[:5]}")
    return True


def _test_latency(
    http: httpx.Client, *, invocations: str, body: dict[str, Any], config: EndpointTestsConfig, outcome: Outcome
) -> None:
    """The p95 of `config.requests` requests, one after the other, within the budget."""
    timings = []
    for _ in range(config.requests):
        started = time.perf_counter()
        http.post(invocations, json=body)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p95 = timings[min(len(timings) - 1, math.ceil(0.95 * len(timings)) - 1)]
    if p95 > config.p95_ms:
        outcome.fail(f"p95 latency {p95:.1f} ms over {config.requests} requests, above {config.p95_ms:g} ms")
    else:
        outcome.note(f"p95 latency {p95:.1f} ms over {config.requests} requests (budget {config.p95_ms:g} ms)")
