"""Sandboxed scoring: a model's predictions on rows, computed in the sandbox and read back as data.

The control plane never loads a model (its pickles and `load_context` are code). To get predictions
it writes the rows (features only, never labels) to a fresh folder, runs `mlgate.checks.score_rows`
in the sandbox with that folder writable and the verified model folder read-only, and reads back one
JSON file, which it checks: the format, one value per row, plain cells (numbers, strings, booleans,
nulls). Nothing else the sandboxed process writes or prints is read, except stderr's tail for the
error message. Each call gets its own folder and process, so two models scored for one check (the
candidate and the champion) cannot touch each other's answers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate import sandbox
from mlgate.checks.score_rows import PREDICTIONS_FORMAT
from mlgate.errors import BackendError, ValidationError

if TYPE_CHECKING:
    from mlgate.config import Settings

DEFAULT_TIMEOUT_S = 300.0  # a registration waits for it; a 10,000-row sample scores in seconds
MAX_PREDICTIONS_BYTES = 64 * 1024 * 1024  # 10,000 rows of a few columns is well under 1 MiB
STDERR_TAIL_CHARS = 800
ROWS_PARQUET, ROWS_JSON, PREDICTIONS_FILE = "rows.parquet", "rows.json", "predictions.json"
# The only variables of the server's environment a scoring process gets: thread counts of the maths.
INHERITED_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_")
CELL_TYPES = (bool, int, float, str, type(None))
SANDBOXED_NOTE = "predictions computed by the model in the sandbox (mlgate.checks.score_rows); read back as JSON"

Cell = bool | int | float | str | None


@dataclass(frozen=True)
class Predictions:
    """A model's answers, checked: `columns` holds one list of `rows` cells per output column."""

    rows: int
    ndim: int  # 1: a vector; 2: a matrix or a table
    names: list[str] | None  # the column names, when the model answered a table
    columns: list[list[Cell]]

    def flat(self) -> list[Cell]:
        """Every cell, row by row (as `numpy.asarray(answer).tolist()` flattened)."""
        return [column[i] for i in range(self.rows) for column in self.columns]

    def scores(self, *, what: str) -> Any:
        """The last column as float64 (a classifier's positive class, a regressor's value); null is NaN."""
        import numpy as np

        last = self.columns[-1]
        if any(isinstance(cell, str) for cell in last):
            raise ValidationError(f"{what} answered text, not numbers: {last[:3]}")
        return np.array([math.nan if cell is None else float(cell) for cell in last], dtype=np.float64)


def scoring_env() -> dict[str, str]:
    """A minimal environment: the server's Python first on PATH, unbuffered output, thread counts."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": os.pathsep.join([bin_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env |= {k: v for k, v in os.environ.items() if k.startswith(INHERITED_PREFIXES)}
    return env


def _fail(what: str, reason: str) -> ValidationError:
    return ValidationError(f"{what}: {reason}", details={"model": what})


def _column(raw: Any, *, rows: int, what: str, index: int) -> list[Cell]:
    if not isinstance(raw, list):
        raise _fail(what, f"the predictions' column {index} is not a list")
    if len(raw) != rows:
        raise _fail(what, f"the model returned {len(raw)} predictions for {rows} rows")
    odd = next((cell for cell in raw if type(cell) not in CELL_TYPES), None)
    if odd is not None:
        raise _fail(what, f"the predictions hold a {type(odd).__name__}, not a number, string or null")
    return raw


def parse_predictions(text: str, *, rows: int, what: str) -> Predictions:
    """The predictions file's content, checked against the rows sent; ValidationError if malformed."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _fail(what, f"the predictions file is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != PREDICTIONS_FORMAT:
        raise _fail(what, f"the predictions file is not in the {PREDICTIONS_FORMAT} format")
    ndim, names, raw = document.get("ndim"), document.get("names"), document.get("columns")
    if ndim not in (1, 2) or not isinstance(raw, list) or not raw or (ndim == 1 and len(raw) != 1):
        raise _fail(what, "the predictions file has no valid columns")
    if names is not None and (
        not isinstance(names, list) or len(names) != len(raw) or not all(isinstance(n, str) for n in names)
    ):
        raise _fail(what, "the predictions file's column names do not match its columns")
    columns = [_column(column, rows=rows, what=what, index=i) for i, column in enumerate(raw)]
    return Predictions(rows=rows, ndim=int(ndim), names=names, columns=columns)


def _write_rows(folder: Path, rows: Any) -> tuple[Path, int]:
    """Rows as a file the scoring process reads: a pandas frame as Parquet, or MLflow split JSON."""
    if isinstance(rows, Mapping):
        path = folder / ROWS_JSON
        path.write_text(json.dumps({"columns": list(rows["columns"]), "data": list(rows["data"])}))
        return path, len(rows["data"])
    path = folder / ROWS_PARQUET
    rows.to_parquet(path, index=False)
    return path, len(rows)


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text[-STDERR_TAIL_CHARS:] if text else "nothing on stderr"


class SandboxScorer:
    """Scores rows with a model folder in the sandbox `execution.sandbox` asks for."""

    def __init__(self, settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.sandbox = sandbox.from_settings(settings)
        self.timeout_s = timeout_s

    def __call__(
        self, model_folder: Path, rows: Any, *, what: str, probabilities: bool = False, timeout_s: float | None = None
    ) -> Predictions:
        """`what` names the model in errors ("diabetes:3 in staging"). `rows`: a pandas frame of the
        model's inputs, or {"columns", "data"} (split JSON). Raises ValidationError when the model
        fails, is too slow or answers something malformed; BackendError when no sandbox can start."""
        self.sandbox.check()
        limit = timeout_s or self.timeout_s
        model = Path(model_folder).resolve()
        with tempfile.TemporaryDirectory(prefix="mlgate-score-") as tmp:
            work = Path(tmp).resolve()
            rows_file, count = _write_rows(work, rows)
            out = work / PREDICTIONS_FILE
            argv = [sys.executable, "-m", "mlgate.checks.score_rows", "--model", str(model)]
            argv += ["--rows", str(rows_file), "--out", str(out), *(["--probabilities"] if probabilities else [])]
            mounts = [sandbox.Mount(model), sandbox.Mount(work, writable=True)]
            try:
                done = self.sandbox.run(argv, env=scoring_env(), mounts=mounts, workdir=work, timeout_s=limit)
            except subprocess.TimeoutExpired:
                raise _fail(what, f"the model did not score {count} rows within {limit:g} s") from None
            except OSError as exc:
                raise BackendError(f"the sandbox to score {what} could not start: {exc}") from exc
            if done.returncode != 0:
                raise _fail(what, f"scoring exited with code {done.returncode}: {_tail(done.stderr)}")
            if not out.is_file() or out.is_symlink():
                raise _fail(what, f"scoring wrote no predictions file: {_tail(done.stderr)}")
            if out.stat().st_size > MAX_PREDICTIONS_BYTES:
                raise _fail(what, f"the predictions file is over {MAX_PREDICTIONS_BYTES // (1024 * 1024)} MiB")
            text = out.read_text(errors="replace")
        return parse_predictions(text, rows=count, what=what)
