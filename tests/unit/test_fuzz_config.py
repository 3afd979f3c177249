"""The config loader fuzzed: mlgate.yaml as random YAML text, and as random values under the schema's own
keys (so that the validators and `resolve`'s cross-section rules are reached, not only the unknown-key
refusal). Loading either gives Settings or refuses with a ConfigError that names the key; no parser's or
validator's own exception escapes, so `mlgate server` and the CLI say what is wrong instead of a traceback."""

from __future__ import annotations

import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel

from mlgate.config import FileConfig, parse_config, resolve
from mlgate.errors import ConfigError, ValidationError
from tests.support.fuzz import PARSERS

CONFIG = Path(tempfile.gettempdir()) / "mlgate-fuzz" / "mlgate.yaml"  # resolve() only computes paths under it

# Strings the schema's validators read: durations, cron, rows, names, roles, URLs, paths (one with NUL).
WORDS = [
    *("1h", "5m", "30s", "2d", "0m", "5000 rows", "0 rows", "*/5 * * * *", "0 25 * * *", "1-2/0 * * * *"),
    *("dev", "staging", "production", "Dev", "lead-data-scientist", "admin", "local", "bwrap", "none"),
    *("http://x", "https://x/", "ftp://x", "sqlite:///x.db", "postgresql://h/db", "~", "..", "/", "a\0b"),
    *("ruff check .", "pytest -q", "canary", "blue-green", "retrain", "notify", "data-drift", "roc_auc"),
]
atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(WORDS),
    st.from_regex(r"\A[0-9]{1,20} ?[smhd]\Z"),
    st.from_regex(r"\A[0-9]{1,20} rows\Z"),
)
loose = st.recursive(
    atoms, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(atoms.map(str), inner, max_size=3), max_leaves=8
)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds: `X`, `X | None`, `list[X]`, `dict[str, list[X]]`..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        return [model for arg in typing.get_args(annotation) for model in _models(arg)]
    return []


def _shaped(annotation: Any, depth: int) -> st.SearchStrategy[Any]:
    """A value of roughly the annotation's shape (its models as mappings of their keys), or anything."""
    origin = typing.get_origin(annotation)
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is list and inner:
        return st.lists(_shaped(inner[0], depth), max_size=2) | atoms
    if origin is dict and len(inner) == 2:
        return st.dictionaries(
            st.sampled_from(["dev", "staging", "production", "qa"]), _shaped(inner[1], depth), max_size=2
        )
    models = _models(annotation)
    if models and depth < 3:
        return _mapping(models[0], depth + 1) | atoms
    return atoms | loose  # mostly a scalar: one of loose's branches in nine


def _mapping(model: type[BaseModel], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    keys = {field.alias or name: _shaped(field.annotation, depth) for name, field in model.model_fields.items()}
    keys["unknown"] = loose  # a key no section has: refused by name
    return st.fixed_dictionaries({}, optional=keys)


def _loads_or_refuses(text: str) -> None:
    try:
        loaded = resolve(parse_config(text, source="mlgate.yaml"), CONFIG)
        assert loaded.env_names and loaded.audit_checkpoint_file
    except ConfigError as exc:
        assert exc.message.startswith("mlgate.yaml"), exc.message
    except ValidationError as exc:  # the domain's own refusals of a value (a gate, a role)
        assert exc.message


@PARSERS
@given(data=_mapping(FileConfig))
@example(data={"monitors": [{"name": "m", "endpoint": "e", "window": "99999999999999999d"}]})
@example(data={"monitors": [{"name": "m", "endpoint": "e", "schedule": "9999999999m"}]})
@example(data={"home": "a\0b"})
def test_a_config_of_the_schemas_keys_loads_or_is_refused_by_key(data: dict[str, Any]) -> None:
    _loads_or_refuses(yaml.safe_dump(data, allow_unicode=True))


# YAML's own syntax, and values its scanner takes for typed ones (timestamps, tagged scalars, anchors).
FRAGMENTS = [
    *("environments:", "gates:", "monitors:", "server:", "home:", "serving:", "- ", "  ", "\n", ": ", ", "),
    *("[", "]", "{", "}", "&x ", "*x", "!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!str ", "? "),
    *("2020-13-01", "2020-02-30", "2020-01-01 25:00:00", "0x", "1e999", ".nan", "~", "'", '"', "#", "|", ">"),
    *("name: dev", "port: 99999", "url: sqlite:///x", "window: 1h", "\t", "\0", "\ufeff"),
]


@PARSERS
@given(text=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=20).map("".join))
@example(text="home: 2020-13-01")
@example(text="server: {port: !!int 0x}")
@example(text="home: !!timestamp x")
@example(text='server: {port: !!int ""}')
@example(text="[" * 500)  # deeper than the parser recurses
@example(text="environments: &x [*x]")
def test_any_yaml_text_loads_or_is_refused(text: str) -> None:
    _loads_or_refuses(text)
