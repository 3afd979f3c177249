"""Model signatures and request payloads: JSON in, a validated 2-D numpy array out, in signature order.

Both protocols (MLflow's four payload formats and Open Inference Protocol v2 tensors) end up here, so a
missing or extra column, a wrong type or a wrong shape gets the same message naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.serving.errors import InputError

# MLflow column type -> the Python types JSON values of that column may have (bool is not an int here).
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "long": (int,),
    "integer": (int,),
    "double": (int, float),
    "float": (int, float),
    "boolean": (bool,),
    "string": (str,),
    "datetime": (str,),
}
NUMERIC_TYPES = {"long", "integer", "double", "float", "boolean"}
# OIP datatype -> column types it can feed.
V2_DATATYPES: dict[str, set[str]] = {
    # A floating tensor may feed an integer column when its values are whole (checked in _whole).
    "FP64": {"double", "float", "long", "integer"},
    "FP32": {"double", "float", "long", "integer"},
    "FP16": {"double", "float", "long", "integer"},
    **{f"{p}INT{b}": {"long", "integer", "double", "float"} for p in ("", "U") for b in (8, 16, 32, 64)},
    "BOOL": {"boolean"},
    "BYTES": {"string", "datetime"},
}
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class Signature:
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def numeric(self) -> bool:
        return all(column.type in NUMERIC_TYPES for column in self.columns)


def parse_signature(raw: Any) -> Signature:
    """A signature from MLflow's MLmodel form ({"inputs": "<json list>"}) or a plain list of columns."""
    inputs = raw.get("inputs") if isinstance(raw, dict) else raw
    if isinstance(inputs, str):
        inputs = json.loads(inputs)
    if not isinstance(inputs, list) or not inputs:
        raise ValueError("the signature has no input columns")
    columns = []
    for item in inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError("the signature's inputs must be named columns (tensor signatures are not supported)")
        if item.get("type") not in PYTHON_TYPES:
            raise ValueError(f"column '{item['name']}' has unsupported type {item.get('type')!r}")
        columns.append(Column(item["name"], item["type"]))
    return Signature(tuple(columns))


def _bad(message: str, status: int = 422) -> InputError:
    return InputError(message, status=status, code="BAD_REQUEST" if status == 400 else None)


def to_matrix(rows: Sequence[Sequence[Any]], signature: Signature) -> np.ndarray:
    """Check every cell against its column's type; float64 when all columns are numeric, else object."""
    if not rows:
        raise _bad("the request has no rows")
    checks = [(c.name, c.type, PYTHON_TYPES[c.type]) for c in signature.columns]
    for index, row in enumerate(rows):
        for value, (name, kind, allowed) in zip(row, checks, strict=True):
            if type(value) not in allowed:
                shown = "null" if value is None else f"{value!r} ({type(value).__name__})"
                raise _bad(f"column '{name}' expects {kind}, got {shown} in row {index}")
    return np.array(rows, dtype=np.float64 if signature.numeric else object)


def _reorder(columns: Any, signature: Signature) -> list[int] | None:
    """Positions of the signature's columns in the caller's column list (None when already in order)."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _bad("'columns' must be a list of column names", 400)
    names = signature.names
    if columns == names:
        return None
    _check_names(columns, names)
    return [columns.index(name) for name in names]


def _check_names(given: Sequence[str], names: list[str]) -> None:
    missing = [n for n in names if n not in given]
    if missing:
        raise _bad(f"missing column '{missing[0]}' (expected columns: {', '.join(names)})")
    extra = [n for n in given if n not in names]
    if extra:
        raise _bad(f"unexpected column '{extra[0]}' (expected columns: {', '.join(names)})")
    if len(set(given)) != len(given):
        raise _bad("duplicate column names")


def _split(body: Any, signature: Signature) -> list[list[Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise _bad("'dataframe_split' must be an object with 'columns' and 'data' (a list of rows)", 400)
    order = _reorder(body.get("columns", signature.names), signature)
    width = len(signature.columns) if order is None else len(body["columns"])
    rows = body["data"]
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise _bad(f"row {index} of 'data' must be a list of {width} values")
    if order is None:
        return list(rows)
    return [[row[i] for i in order] for row in rows]


def _records(records: list[Any], signature: Signature, field: str) -> list[list[Any]]:
    names = signature.names
    wanted = set(names)
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise _bad(f"item {index} of '{field}' must be an object of column -> value", 400)
        if record.keys() != wanted:
            _check_names(list(record), names)
        rows.append([record[name] for name in names])
    return rows


def _positional(rows: list[Any], signature: Signature, field: str) -> list[list[Any]]:
    width = len(signature.columns)
    if width == 1 and all(not isinstance(row, list | dict) for row in rows):
        return [[value] for value in rows]
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise _bad(f"item {index} of '{field}' must be a list of {width} values ({', '.join(signature.names)})")
    return rows


def _columnar(body: dict[str, Any], signature: Signature, field: str) -> list[list[Any]]:
    _check_names(list(body), signature.names)
    columns = [body[name] for name in signature.names]
    lengths = {len(c) if isinstance(c, list) else -1 for c in columns}
    if len(lengths) != 1 or -1 in lengths:
        raise _bad(f"every column of '{field}' must be a list of the same length")
    return [list(row) for row in zip(*columns, strict=True)]


def rows_from_mlflow(payload: Any, signature: Signature) -> list[list[Any]]:
    """Rows (in signature order) from an MLflow scoring payload."""
    if not isinstance(payload, dict):
        raise _bad(f"the body must be a JSON object with one of: {', '.join(MLFLOW_FORMATS)}", 400)
    found = [key for key in MLFLOW_FORMATS if key in payload]
    unknown = [key for key in payload if key not in MLFLOW_FORMATS and key != "params"]
    if len(found) != 1 or unknown:
        what = f"unknown field '{unknown[0]}'" if unknown else f"{len(found)} payload formats"
        raise _bad(f"{what}; the body needs exactly one of: {', '.join(MLFLOW_FORMATS)}", 400)
    field = found[0]
    body = payload[field]
    if field == "dataframe_split":
        return _split(body, signature)
    if isinstance(body, dict) and field == "inputs":
        return _columnar(body, signature, field)
    if not isinstance(body, list) or not body:
        raise _bad(f"'{field}' must be a non-empty list", 400)
    if isinstance(body[0], dict):
        return _records(body, signature, field)
    return _positional(body, signature, field)


def _flatten(data: Any) -> list[Any]:
    """A tensor's values, row by row. Without recursion: a JSON body may nest lists a thousand deep."""
    values: list[Any] = []
    pending = [data]
    while pending:
        items = pending.pop()
        if not isinstance(items, list):
            raise _bad("tensor 'data' must be a list", 400)
        if items and isinstance(items[0], list):
            pending.extend(reversed(items))  # the first row next: the values keep their order
        else:
            values.extend(items)
    return values


def _tensor(tensor: Any, index: int) -> tuple[str, list[int], str, list[Any]]:
    if not isinstance(tensor, dict):
        raise _bad(f"inputs[{index}] must be a tensor object", 400)
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str):
        raise _bad(f"inputs[{index}] needs a 'name'", 400)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise _bad(f"input '{name}' needs a 'shape' (a list of integers)", 400)
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise _bad(f"input '{name}' has unknown datatype {datatype!r}", 400)
    data = _flatten(tensor.get("data"))
    expected = 1
    for dim in shape:
        expected *= dim
    if len(data) != expected:
        raise _bad(f"input '{name}' has shape {shape} but {len(data)} values")
    return name, shape, datatype, data


def rows_from_v2(payload: Any, signature: Signature) -> list[list[Any]]:
    """Rows from an OIP v2 inference request: one tensor per column, or one 2-D tensor of all columns."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise _bad("the body must be an object with a non-empty 'inputs' list of tensors", 400)
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    names = signature.names
    width = len(names)
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][0] not in names:
        name, shape, datatype, data = tensors[0]
        if shape[1] != width:
            raise _bad(f"input '{name}' has {shape[1]} columns, expected {width} ({', '.join(names)})")
        for column in signature.columns:
            if column.type not in V2_DATATYPES[datatype]:
                raise _bad(f"input '{name}' is {datatype}, which cannot feed column '{column.name}' ({column.type})")
        rows = [data[i : i + width] for i in range(0, len(data), width)]
        if datatype.startswith("FP"):
            for position, column in enumerate(signature.columns):
                _whole(rows, position, column)
        return rows
    _check_names([t[0] for t in tensors], names)
    by_name = {t[0]: t for t in tensors}
    columns = []
    length = None
    for column in signature.columns:
        name, shape, datatype, data = by_name[column.name]
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise _bad(f"input '{name}' must have shape [n] or [n, 1], got {shape}")
        if length is not None and shape[0] != length:
            raise _bad(f"input '{name}' has {shape[0]} rows, other inputs have {length}")
        length = shape[0]
        if column.type not in V2_DATATYPES[datatype]:
            raise _bad(f"input '{name}' is {datatype}, which cannot feed column '{name}' ({column.type})")
        columns.append(data)
    rows = [list(row) for row in zip(*columns, strict=True)]
    for position, (column, (_, _, datatype, _)) in enumerate(
        zip(signature.columns, [by_name[n] for n in names], strict=True)
    ):
        if datatype.startswith("FP"):
            _whole(rows, position, column)
    return rows


def _whole(rows: list[list[Any]], position: int, column: Column) -> None:
    """Whole floats of a floating tensor become ints for an integer column; 1.5 is refused by name."""
    if column.type not in ("long", "integer"):
        return
    for index, row in enumerate(rows):
        value = row[position]
        if type(value) is float:
            if not value.is_integer():
                raise _bad(f"column '{column.name}' expects {column.type}, got {value!r} in row {index}")
            row[position] = int(value)


def v2_datatype(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64" if array.dtype.itemsize == 8 else "FP32"
    return "BYTES"
