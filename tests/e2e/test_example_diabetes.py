"""The reference customer project in examples/diabetes: its own tests and lint pass, its data is
deterministic. Run as subprocesses, in the example's own configuration, so the example can't rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    env["PYTHONPATH"] = str(EXAMPLE / "src")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the repository
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


def _run(*args: str, cwd: Path = EXAMPLE) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_example_projects_own_tests_pass(tmp_path: Path) -> None:
    done = _run(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        f"--basetemp={tmp_path / 'pytest'}",
    )
    assert " passed" in done.stdout
    assert not (EXAMPLE / "mlruns").exists()


def test_the_example_project_is_lint_clean() -> None:
    _run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    _run(sys.executable, "-m", "ruff", "format", "--check", "--no-cache", ".")


def test_the_example_keeps_no_data_and_has_its_mlgate_settings() -> None:
    assert not (EXAMPLE / "data").exists()
    settings = (EXAMPLE / "mlgate.yaml").read_text()
    assert "python -m diabetes.train --data ${data.diabetes-train}" in settings


def test_generated_data_is_byte_identical_and_drift_differs(tmp_path: Path) -> None:
    outputs = {name: tmp_path / name / "patients.csv" for name in ("first", "second", "drifted")}
    for name, out in outputs.items():
        drift = ["--drift"] if name == "drifted" else []
        args = ["--rows", "1000", "--seed", "7", *drift, "--out", str(out)]
        _run(sys.executable, "-m", "diabetes.data", *args, cwd=tmp_path)
    first, second, drifted = (outputs[name].read_bytes() for name in outputs)
    assert first == second
    assert drifted != first
    lines = first.decode().splitlines()
    assert lines[0] == (
        "PatientID,Pregnancies,PlasmaGlucose,DiastolicBloodPressure,TricepsThickness,"
        "SerumInsulin,BMI,DiabetesPedigree,Age,Diabetic"
    )
    assert len(lines) == 1001
