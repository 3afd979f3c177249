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
    outcome = Outcome()
    with db.read() as session:
        row = session.get(ModelVersion, model_version_id)
        assert row is not None
        model, version, digest = row.name, row.version, row.digest
        example = _example(row)
    name = config.endpoint or model
    try:
        view = endpoints.get(db, env, name)
    except NotFoundError:
        serving.create(env, name, actor="system", description=f"created by mlgate for the endpoint tests of {model}")
        view = endpoints.get(db, env, name)
        outcome.note(f"created endpoint '{name}' in {env}")
    slots = view.allocation.slots
    first = not slots or all(s.slot == config.slot for s in slots)
    serving.deploy(
        env,
        name,
        model=model,
        version=version,
        slot=config.slot,
        traffic=None if first else 0,
        mirror=None,
        actor="system",
    )
    outcome.note(f"deployed {model}:{version} to slot '{config.slot}' of '{name}' ({'100' if first else '0'}%)")
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
        v2 = http.post(f"{base}/v2/models/{name}/versions/{config.slot}/infer", json={"inputs": tensors})
        if v2.status_code != 200 or not _same(_flat(v2.json()), reference):
            outcome.fail(f"format OIP v2: {v2.status_code}, answers differ from dataframe_split: {v2.text[:200]}")
        else:
            outcome.note("format OIP v2: same answers")
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
        slot = SlotAllocation(config.slot, model_version_id, model, version, digest, 0)
        try:
            local = _local_predictions(
                settings, serving.place(settings.environment(env), slot), columns, data, what=f"{model}:{version}"
            )
        except ValidationError as exc:
            outcome.fail(f"the staging copy's own predictions failed: {exc.message}")
            return outcome
        if _same(local, reference):
            outcome.note(f"predictions equal the staging copy's own on {len(data)} rows")
        else:
            outcome.fail(
                f"the endpoint's predictions differ from the staging copy's own: {reference[:5]} vs {local[:5]}"
            )
        timings = []
        for _ in range(config.requests):
            started = time.perf_counter()
            http.post(invocations, json=formats["dataframe_split"])
            timings.append((time.perf_counter() - started) * 1000)
        timings.sort()
        p95 = timings[min(len(timings) - 1, math.ceil(0.95 * len(timings)) - 1)]
        if p95 > config.p95_ms:
            outcome.fail(f"p95 latency {p95:.1f} ms over {config.requests} requests, above {config.p95_ms:g} ms")
        else:
            outcome.note(f"p95 latency {p95:.1f} ms over {config.requests} requests (budget {config.p95_ms:g} ms)")
    return outcome
