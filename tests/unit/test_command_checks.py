"""Command checks' rules (`mlgate.domain.command_checks`): lint under the policy's ruff configuration, and
what each verdict rests on. One real ruff run shows that the snapshot's own configuration is ignored."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mlgate.config import ChecksConfig
from mlgate.domain.command_checks import (
    AUTHORS_TESTS,
    SNAPSHOT_CONFIGURATION,
    evidence_notes,
    ruff_overrides,
    with_policy_config,
)

POLICY = """
line-length = 100
[lint]
select = ["F", "W"]
[lint.per-file-ignores]
"tests/*" = ["S101"]
"""


def test_the_policy_configuration_becomes_overrides_of_an_isolated_ruff() -> None:
    command = with_policy_config("ruff check .", POLICY)
    words = shlex.split(command)
    assert words[:3] == ["ruff", "check", "--isolated"] and words[-1] == "."
    assert ruff_overrides(POLICY) == [
        "line-length = 100",
        'lint.select = ["F", "W"]',
        'lint.per-file-ignores."tests/*" = ["S101"]',
    ]
    # pyproject style is unwrapped; `python -m ruff` is ruff too
    assert ruff_overrides("[tool.ruff.lint]\nselect = ['E']\n") == ['lint.select = ["E"]']
    assert "--isolated" in with_policy_config("python -m ruff check src", POLICY)


@pytest.mark.parametrize(
    ("command", "text", "said"),
    [
        ("flake8 .", POLICY, "single ruff command"),
        ("ruff check . && echo ok", POLICY, "single ruff command"),
        ("ruff check .", "[lint\nselect = 1", "not TOML"),
    ],
)
def test_a_configuration_that_cannot_apply_is_refused_when_the_policy_is_read(
    command: str, text: str, said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        ChecksConfig.model_validate({"lint": {"command": command, "config": text}})


def test_evidence_says_whose_configuration_and_when_the_authors_tests_decide() -> None:
    assert evidence_notes("ruff check .", policy_config=False) == {"configuration": SNAPSHOT_CONFIGURATION}
    assert "policy" in evidence_notes("ruff check --isolated .", policy_config=True)["configuration"]
    assert evidence_notes("pytest -q", policy_config=False) == {"verdict_source": AUTHORS_TESTS}
    assert evidence_notes("python -m pytest tests", policy_config=False) == {"verdict_source": AUTHORS_TESTS}
    assert evidence_notes("make check", policy_config=False) == {}


@pytest.mark.skipif(shutil.which("ruff") is None and not Path(".venv/bin/ruff").exists(), reason="no ruff")
def test_a_lenient_configuration_in_the_snapshot_does_not_count(tmp_path: Path) -> None:
    ruff = shutil.which("ruff") or str(Path(".venv/bin/ruff").resolve())
    (tmp_path / "pyproject.toml").write_text('[tool.ruff.lint]\nignore = ["ALL"]\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "ruff.toml").write_text('[lint]\nignore = ["ALL"]\n')
    (tmp_path / "pkg" / "mod.py").write_text("import os\n")
    own = subprocess.run(shlex.split(f"{ruff} check ."), cwd=tmp_path, capture_output=True, text=True)
    assert own.returncode == 0, own.stdout  # the snapshot's own configuration lets it through
    policed = subprocess.run(
        shlex.split(with_policy_config(f"{ruff} check .", POLICY)), cwd=tmp_path, capture_output=True, text=True
    )
    assert policed.returncode == 1 and "F401" in policed.stdout, policed.stdout + policed.stderr
