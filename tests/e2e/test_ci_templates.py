"""The example's CI templates: what they declare, and the pull-request workflow run as CI would (the
three that need a server run in test_ci_outer_loop.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "diabetes"
WORKFLOWS = EXAMPLE / "ci" / "github-actions"


def _steps(workflow: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(workflow.read_text())
    (job,) = document["jobs"].values()
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def _checkout(tmp_path: Path) -> Path:
    """What `actions/checkout` gives: the project as committed, without generated data."""
    folder = tmp_path / "diabetes"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("data", "mlruns", "__pycache__", ".*_cache"))
    for command in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=ci", "-c", "user.email=ci@example.com", "commit", "-qm", "ci"],
    ):
        subprocess.run(["git", *command], cwd=folder, check=True, capture_output=True)
    return folder


def _run_steps(workflow: Path, folder: Path, env: dict[str, str]) -> list[str]:
    ran = []
    for step in _steps(workflow):
        if "run" not in step or step.get("id") == "install":  # the install step fetches mlgate itself
            continue
        assert "${{" not in step["run"], f"{step['name']}: a run step must take secrets from env, not inline"
        before = _stamps(folder)
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", step["run"]],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, (
            f"step '{step['name']}' failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}{_written(folder, before)}"
        )
        ran.append(step["name"])
    return ran


def _stamps(folder: Path) -> dict[Path, int]:
    """The files of the checkout at its top level, with their modification times."""
    return {path: path.stat().st_mtime_ns for path in folder.iterdir() if path.is_file()}


def _written(folder: Path, before: dict[Path, int], limit: int = 4000) -> str:
    """What a step wrote at the checkout's top level (its redirected output: `checks.json`, ...), each
    file's tail, for a failed step's message: a step that sends its output to a file says why there."""
    shown = []
    for path, stamp in sorted(_stamps(folder).items()):
        if before.get(path) != stamp:
            shown.append(f"\n--- {path.name}:\n{path.read_text(errors='replace')[-limit:]}")
    return "".join(shown)


def _ci_environment(url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_", "PYTEST_"))}
    env |= {"MLGATE_URL": url, "MLGATE_TOKEN": token, "PYTHONDONTWRITEBYTECODE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_workflows_declare_what_they_need() -> None:
    for workflow in sorted(WORKFLOWS.glob("*.yml")):
        steps = _steps(workflow)
        assert steps[0]["uses"].startswith("actions/checkout@")
        assert any(s.get("id") == "install" for s in steps), f"{workflow.name}: no install step"
    main = yaml.safe_load((WORKFLOWS / "model-ci.yml").read_text())
    env = main["jobs"]["train-and-register"]["env"]
    assert env == {"MLGATE_URL": "${{ secrets.MLGATE_URL }}", "MLGATE_TOKEN": "${{ secrets.MLGATE_TOKEN }}"}
    names = [s.get("name") for s in _steps(WORKFLOWS / "model-ci.yml")]
    assert (
        names.index("Lint")
        < names.index("Unit tests")
        < names.index("Train in dev")
        < names.index("Register the model")
    )


def test_pull_request_checks_run(tmp_path: Path) -> None:
    folder = _checkout(tmp_path)
    ran = _run_steps(WORKFLOWS / "pull-request.yml", folder, _ci_environment("http://127.0.0.1:9", "unused"))
    assert ran == ["Lint", "Unit tests"]
