"""The serving host's payload parsers fuzzed: random JSON (as a body can carry it) in MLflow's four formats,
the Open Inference Protocol's tensors, ground truth, pushed specs and signatures, and random bytes as a body.
Each either answers (rows that fit the signature, a spec, a signature) or refuses with its own input error;
nothing else escapes, so the host never answers a caller's mistake with a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from mlgate.serving.asgi import Request, read_json
from mlgate.serving.errors import InputError
from mlgate.serving.feedback import feedback_pairs
from mlgate.serving.signature import (
    MLFLOW_FORMATS,
    PYTHON_TYPES,
    V2_DATATYPES,
    Signature,
    parse_signature,
    rows_from_mlflow,
    rows_from_v2,
    to_matrix,
)
from mlgate.serving.spec import parse_spec
from tests.support.fuzz import PARSERS

NAMES = ["age", "bmi", "glucose", "sex"]
REFUSED = {400, 413, 415, 422}
ONE_SLOT = {"key_hashes": ["0" * 64], "slots": {"blue": {"model_dir": "/m", "digest": "d", "traffic": 100}}}
DEEP = {"name": "age", "shape": [1], "datatype": "FP64", "data": orjson.loads(b"[" * 1000 + b"1" + b"]" * 1000)}

# What orjson hands the parsers: no NaN or infinity, integers within 64 bits (larger ones arrive as floats).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
keys = st.one_of(st.sampled_from([*NAMES, *MLFLOW_FORMATS, "columns", "data", "params"]), st.text(max_size=4))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=12
)
signatures = st.lists(
    st.builds(
        lambda name, kind: {"name": name, "type": kind}, st.sampled_from(NAMES), st.sampled_from(list(PYTHON_TYPES))
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda column: column["name"],
).map(parse_signature)


def _rows(width: int, cell: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.lists(cell, min_size=width, max_size=width) | json_values, max_size=4)


@st.composite
def mlflow_payloads(draw: st.DrawFn) -> Any:
    """One of the four formats, shaped like it most of the time (with random cells), else any JSON."""
    names = draw(st.lists(st.sampled_from(NAMES), max_size=5))
    cell = scalars | json_values
    shaped = {
        "dataframe_split": st.fixed_dictionaries({"columns": st.just(names), "data": _rows(len(names), cell)}),
        "dataframe_records": st.lists(st.dictionaries(st.sampled_from(NAMES), cell, max_size=5), max_size=4),
        "instances": _rows(len(names), cell) | st.lists(scalars, max_size=4),
        "inputs": st.dictionaries(st.sampled_from(NAMES), st.lists(cell, max_size=4) | cell, max_size=5),
    }
    fields = draw(st.lists(st.sampled_from(MLFLOW_FORMATS), min_size=1, max_size=2, unique=True))
    body = {field: draw(shaped[field] | json_values) for field in fields}
    return draw(st.just(body) | st.builds(lambda extra: {**body, **extra}, st.dictionaries(keys, json_values)))


tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*NAMES, "input-0"]) | json_values,
        "shape": st.lists(st.integers(min_value=-2, max_value=5), max_size=3) | json_values,
        "datatype": st.sampled_from(list(V2_DATATYPES)) | json_values,
        "data": st.lists(scalars, max_size=8) | st.lists(st.lists(scalars, max_size=4), max_size=4) | json_values,
    }
)
v2_payloads = st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=4) | json_values}) | json_values


def _answers_or_refuses(parse: Any, payload: Any, signature: Signature) -> None:
    try:
        matrix = to_matrix(parse(payload, signature), signature)
    except InputError as exc:
        assert exc.status in REFUSED, exc
        assert exc.message
        return
    assert isinstance(matrix, np.ndarray) and matrix.ndim == 2 and matrix.shape[1] == len(signature.columns)
    assert matrix.shape[0] >= 1


@PARSERS
@given(payload=mlflow_payloads() | json_values, signature=signatures)
def test_mlflow_payloads_become_rows_of_the_signature_or_an_input_error(payload: Any, signature: Signature) -> None:
    _answers_or_refuses(rows_from_mlflow, payload, signature)


@PARSERS
@given(payload=v2_payloads, signature=signatures)
@example(payload={"inputs": [{**DEEP, "datatype": []}]}, signature=parse_signature([{"name": "age", "type": "double"}]))
@example(payload={"inputs": [DEEP]}, signature=parse_signature([{"name": "age", "type": "double"}]))
def test_open_inference_tensors_become_rows_of_the_signature_or_an_input_error(
    payload: Any, signature: Signature
) -> None:
    _answers_or_refuses(rows_from_v2, payload, signature)


@PARSERS
@given(
    payload=st.fixed_dictionaries(
        {"feedback": st.lists(st.dictionaries(st.sampled_from(["request_id", "label"]), scalars))}
    )
    | st.fixed_dictionaries({"request_ids": json_values, "labels": json_values})
    | json_values
)
def test_ground_truth_is_pairs_or_an_input_error(payload: Any) -> None:
    try:
        ids, labels = feedback_pairs(payload)
    except InputError as exc:
        assert exc.status in REFUSED, exc
        return
    assert len(ids) == len(labels) > 0 and all(isinstance(label, float) for label in labels)


slots = st.dictionaries(
    st.sampled_from(["blue", "green"]) | st.text(max_size=3),
    st.fixed_dictionaries(
        {
            "model_dir": st.sampled_from(["/m", ""]),
            "digest": st.just("d"),
            "traffic": st.sampled_from([100, 50]) | scalars,
        },
        optional={"version": scalars, "signature": json_values},
    )
    | json_values,
    max_size=3,
)
endpoint_specs = st.fixed_dictionaries(
    {"key_hashes": st.just(["0" * 64]) | json_values, "slots": slots},
    optional={
        "mirror": st.fixed_dictionaries({"slot": st.sampled_from(["blue"]) | json_values, "percent": scalars})
        | json_values,
        "stable": st.sampled_from(["blue", "green"]) | json_values,
        "sample_rate": scalars,
    },
)
specs = st.fixed_dictionaries(
    {"endpoints": st.dictionaries(st.sampled_from(["diabetes"]) | st.text(max_size=3), endpoint_specs | json_values)},
    optional={"batching": st.dictionaries(st.sampled_from(["max_batch_size", "max_wait_ms"]), scalars) | json_values},
)


@PARSERS
@given(raw=specs | json_values)
@example(raw={"endpoints": {"e": {**ONE_SLOT, "mirror": {"slot": [], "percent": 1}}}})
@example(raw={"endpoints": {"e": {**ONE_SLOT, "stable": {}}}})
def test_a_pushed_spec_parses_or_is_an_input_error(raw: Any) -> None:
    try:
        parse_spec(raw)
    except InputError as exc:
        assert exc.status == 422, exc


@PARSERS
@given(
    raw=st.fixed_dictionaries({"inputs": json_values | json_values.map(lambda v: orjson.dumps(v).decode())})
    | json_values
)
def test_a_signature_parses_or_is_a_value_error(raw: Any) -> None:
    try:
        signature = parse_signature(raw)
    except ValueError:  # the model's MLmodel is refused when it is loaded (json.JSONDecodeError is one)
        return
    assert signature.columns


def _read(body: bytes, content_type: bytes | None, chunk: int, required: bool) -> Any:
    headers = [(b"content-type", content_type)] if content_type is not None else []
    request = Request({"method": "POST", "path": "/", "headers": headers})
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return asyncio.run(read_json(request, receive, max_bytes=64, json_required=required))


@PARSERS
@given(
    body=st.binary(max_size=100) | json_values.map(orjson.dumps),
    content_type=st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"text/plain", b"\xff"])
    | st.none(),
    chunk=st.integers(min_value=1, max_value=40),
    required=st.booleans(),
)
def test_a_body_is_json_or_an_input_error(body: bytes, content_type: bytes | None, chunk: int, required: bool) -> None:
    try:
        _read(body, content_type, chunk, required)
    except InputError as exc:
        assert exc.status in REFUSED, exc
