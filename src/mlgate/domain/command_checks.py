"""What a command check runs and what its verdict rests on: the policy's ruff configuration, the author's tests.

A snapshot is the author's: a `pyproject.toml` or `ruff.toml` in it could switch every lint rule off.
When the policy gives lint a configuration (`checks.lint.config`, ruff's TOML), ruff runs with
`--isolated` (no configuration file is read, the snapshot's included) and the policy's settings as
`--config 'KEY = VALUE'` overrides on the command line: nothing the job's folder holds can replace them.
A check whose verdict the author's own files decide (pytest running the author's tests) says so.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

POLICY_CONFIGURATION = "the policy's (ruff --isolated: configuration files in the snapshot are ignored)"
SNAPSHOT_CONFIGURATION = "the snapshot's own"
AUTHORS_TESTS = "the author's tests"
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
SHELL_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ">", ">>", "<"})


def _runs(words: list[str], tool: str) -> bool:
    return bool(words) and (Path(words[0]).name == tool or (len(words) > 2 and words[1:3] == ["-m", tool]))


def runs_pytest(command: str) -> bool:
    return _runs(shlex.split(command), "pytest")


def runs_ruff(command: str) -> bool:
    return _runs(shlex.split(command), "ruff")


def _key(name: str) -> str:
    return name if BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    """A TOML value, inline: what tomllib parsed, written back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"unsupported TOML value {value!r}")


def _pairs(table: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for name, value in table.items():
        key = f"{prefix}{_key(name)}"
        found += _pairs(value, f"{key}.") if isinstance(value, dict) and value else [f"{key} = {_value(value)}"]
    return found


def ruff_overrides(text: str) -> list[str]:
    """The configuration as ruff's `KEY = VALUE` overrides; a pyproject-style `[tool.ruff]` is unwrapped.
    ValueError if it is not TOML."""
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the lint configuration is not TOML: {exc}") from exc
    tool = parsed.get("tool")
    if set(parsed) == {"tool"} and isinstance(tool, dict) and isinstance(tool.get("ruff"), dict):
        parsed = tool["ruff"]
    return _pairs(parsed)


def with_policy_config(command: str, text: str) -> str:
    """The ruff command, run with the policy's configuration and no configuration file; ValueError if
    the command is not a single ruff command."""
    words = shlex.split(command)
    if not _runs(words, "ruff") or SHELL_OPERATORS & set(words):
        raise ValueError(f"a lint configuration applies to a single ruff command, not `{command}`")
    at = words.index("check") + 1 if "check" in words else len(words)
    flags = ["--isolated", *(part for pair in ruff_overrides(text) for part in ("--config", pair))]
    return shlex.join([*words[:at], *flags, *words[at:]])


def evidence_notes(command: str, *, policy_config: bool) -> dict[str, str]:
    """What a command check's verdict rests on, for its evidence: whose configuration lint used, and
    whether the author's own tests decided it."""
    notes = {}
    if runs_ruff(command):
        notes["configuration"] = POLICY_CONFIGURATION if policy_config else SNAPSHOT_CONFIGURATION
    if runs_pytest(command):
        notes["verdict_source"] = AUTHORS_TESTS
    return notes
