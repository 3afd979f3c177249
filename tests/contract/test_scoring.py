"""Sandboxed scoring (`services.registration.scoring`, `checks.score_rows`) and the model-validation maths.

The models here are MLflow models from code: their file runs when the model is loaded, so whatever
it does happens wherever the model is loaded. The control plane must see only the predictions file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from mlgate.checks.score_rows import PREDICTIONS_FORMAT
from mlgate.domain import metrics
from mlgate.errors import ValidationError
from mlgate.services.registration.scoring import SandboxScorer, parse_predictions
from tests.support.project import Project

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

MODEL = """
import json, os
import mlflow
from mlflow.pyfunc import PythonModel

MARKER = {marker!r}
SECRET = {secret!r}


def _can_read(path):
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        return True
    except OSError:
        return False


class Sneaky(PythonModel):
    def load_context(self, context):
        try:
            with open(MARKER, "w") as handle:
                handle.write("ran here")
        except OSError:
            pass

    def predict(self, context, model_input, params=None):
        {body}


mlflow.models.set_model(Sneaky())
"""
SAW = "return [float(_can_read(SECRET))] * len(model_input)"  # 1.0 if the home's secret was in reach


def _model(folder: Path, tmp_path: Path, body: str = SAW) -> Path:
    import mlflow.pyfunc

    code = tmp_path / f"{folder.name}.py"
    code.write_text(MODEL.format(marker=str(tmp_path / "pwned"), secret=str(tmp_path / "control.db"), body=body))
    mlflow.pyfunc.save_model(str(folder), python_model=str(code), pip_requirements=[])
    return folder


@pytest.fixture
def scorer(project: Project) -> SandboxScorer:
    return SandboxScorer(project.settings, timeout_s=120)


ROWS = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0]})


def test_a_model_loaded_in_the_sandbox_cannot_write_outside_nor_read_the_home(
    scorer: SandboxScorer, tmp_path: Path
) -> None:
    (tmp_path / "control.db").write_text("the server's secrets")
    folder = _model(tmp_path / "sneaky", tmp_path)
    answers = scorer(folder, ROWS, what="sneaky:1")
    # It ran (it answered), but its marker went nowhere we can see (onto the sandbox's own /tmp, at
    # most), and the secret beside it was out of its reach.
    assert (answers.rows, answers.ndim, answers.names) == (3, 1, None)
    assert answers.columns == [[0.0, 0.0, 0.0]]
    assert not (tmp_path / "pwned").exists()
    assert answers.flat() == [0.0, 0.0, 0.0]


def test_a_failing_slow_or_forging_model_is_a_validation_error_naming_it(scorer: SandboxScorer, tmp_path: Path) -> None:
    failing = _model(tmp_path / "failing", tmp_path, body='raise RuntimeError("no such column: glucose")')
    with pytest.raises(ValidationError) as failed:
        scorer(failing, ROWS, what="failing:2 in staging")
    assert "failing:2 in staging" in failed.value.message and "no such column: glucose" in failed.value.message
    # A model that writes the predictions file itself, then leaves before mlgate's code could: refused.
    forged = {"format": PREDICTIONS_FORMAT, "rows": 3, "ndim": 1, "names": None, "columns": [[1.0]]}
    body = f"open('predictions.json', 'w').write({json.dumps(forged)!r}); os._exit(0)"
    forging = _model(tmp_path / "forging", tmp_path, body=body)
    with pytest.raises(ValidationError) as malformed:
        scorer(forging, ROWS, what="forging:1")
    assert "forging:1" in malformed.value.message and "1 predictions for 3 rows" in malformed.value.message
    slow = _model(tmp_path / "slow", tmp_path, body="import time; time.sleep(60)")
    with pytest.raises(ValidationError) as late:
        scorer(slow, ROWS, what="slow:1", timeout_s=4)
    assert "slow:1" in late.value.message and "within 4 s" in late.value.message


def test_the_predictions_file_is_checked_as_data() -> None:
    def doc(**changes: object) -> str:
        base: dict[str, object] = {"format": PREDICTIONS_FORMAT, "ndim": 2, "names": ["p0", "p1"]}
        base["columns"] = [[0.1, 0.2], [0.9, None]]
        return json.dumps(base | changes)

    good = parse_predictions(doc(), rows=2, what="m:1")
    assert good.flat() == [0.1, 0.9, 0.2, None]
    assert np.isnan(good.scores(what="m:1")[1])
    for text, reason in (
        ("not json", "not JSON"),
        (doc(format="pickle"), "format"),
        (doc(columns=[[{"__reduce__": 1}, 0.2], [0.9, 0.1]]), "a dict"),
        (doc(columns=[[[0.1], 0.2], [0.9, 0.1]]), "a list"),
        (doc(columns=[[0.1], [0.9]]), "1 predictions for 2 rows"),
        (doc(names=["only one"]), "column names"),
        (doc(ndim=3), "no valid columns"),
    ):
        with pytest.raises(ValidationError) as refused:
            parse_predictions(text, rows=2, what="m:1")
        assert "m:1" in refused.value.message and reason in refused.value.message, (text, refused.value.message)
    with pytest.raises(ValidationError, match="text, not numbers"):
        parse_predictions(doc(columns=[["a", "b"], ["yes", "no"]]), rows=2, what="m:1").scores(what="m:1")


def test_the_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 500)
    scores = np.round(np.clip(truth * 0.3 + rng.random(500) * 0.7, 0, 1), 2)  # rounded: ties
    guessed = (scores >= 0.5).astype(int)
    assert metrics.metric_value("roc_auc", truth, scores) == pytest.approx(sk.roc_auc_score(truth, scores))
    assert metrics.metric_value("accuracy", truth, scores) == pytest.approx(sk.accuracy_score(truth, guessed))
    assert metrics.metric_value("f1", truth, scores) == pytest.approx(sk.f1_score(truth, guessed))
    values = rng.normal(size=500)
    answers = values + rng.normal(scale=0.3, size=500)
    assert metrics.metric_value("r2", values, answers) == pytest.approx(sk.r2_score(values, answers))
    rmse = np.sqrt(sk.mean_squared_error(values, answers))
    assert metrics.metric_value("rmse", values, answers) == pytest.approx(rmse)
    with pytest.raises(metrics.MetricError, match="missing or infinite"):
        metrics.metric_value("roc_auc", truth, np.r_[scores[:-1], np.nan])
    with pytest.raises(metrics.MetricError, match="both classes"):
        metrics.metric_value("roc_auc", np.ones(5), np.ones(5))


def test_the_verdict_weighs_the_floor_and_the_champion() -> None:
    passed = metrics.verdict("roc_auc", 0.9, rows=300, floor=0.85, champion=("risk:1", 0.91), max_regression=0.02)
    assert passed.status == "passed" and "champion risk:1 0.9100" in passed.summary
    assert passed.figures["regression"] == pytest.approx(0.01)
    failed = metrics.verdict("rmse", 3.0, rows=10, floor=2.5, champion=("risk:1", 2.0), max_regression=0.5)
    assert failed.status == "failed"
    assert "above the bar 2.5" in failed.summary and "regresses by 1.0000" in failed.summary


def test_the_scoring_entry_point_answers_tables_as_named_columns(tmp_path: Path) -> None:
    from mlgate.checks.score_rows import as_document

    table = as_document(pd.DataFrame({"low": [0.1, 0.2], "high": [0.9, 0.8]}), 2)
    assert table["names"] == ["low", "high"] and table["columns"] == [[0.1, 0.2], [0.9, 0.8]]
    assert as_document(np.array([[1, 2], [3, 4]]), 2)["columns"] == [[1, 3], [2, 4]]
    with pytest.raises(ValueError, match="3 dimensions"):
        as_document(np.zeros((2, 2, 2)), 2)
    parsed = parse_predictions(json.dumps(table), rows=2, what="m")
    assert parsed.flat() == [0.1, 0.9, 0.2, 0.8]
