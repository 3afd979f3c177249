"""The training recipe, and the training script against a throwaway MLflow store."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from diabetes import data, evaluate, train


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return data.generate(rows=10_000, seed=0)


def test_split_is_70_30_over_the_features(patients: pd.DataFrame) -> None:
    parts = train.split(patients)
    assert (len(parts.X_train), len(parts.X_test)) == (7_000, 3_000)
    assert list(parts.X_train.columns) == data.FEATURES
    assert "PatientID" not in parts.X_train.columns
    assert parts.X_train.index.equals(parts.y_train.index)
    # The split is fixed: the same rows every time.
    assert train.split(patients).X_test.index.equals(parts.X_test.index)


def test_recipe_reaches_the_expected_auc(patients: pd.DataFrame) -> None:
    parts = train.split(patients)
    model = train.fit(parts.X_train, parts.y_train, reg_rate=0.01)
    assert model.C == pytest.approx(100)
    metrics = evaluate.evaluate(model, parts.X_test.assign(Diabetic=parts.y_test))
    assert 0.85 <= metrics["AUC"] <= 0.90
    assert 0.75 <= metrics["Accuracy"] <= 0.90
    assert 0 < metrics["precision"] <= 1 and 0 < metrics["recall"] <= 1
    assert metrics["rows"] == 3_000
    assert set(model.predict(parts.X_test)) == {0, 1}


def test_reg_rate_must_be_positive(patients: pd.DataFrame) -> None:
    parts = train.split(patients.head(100))
    with pytest.raises(ValueError):
        train.fit(parts.X_train, parts.y_train, reg_rate=0)


def test_roc_figure_draws_the_curve(tmp_path: Path) -> None:
    fig = evaluate.roc_figure([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    fig.savefig(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


@dataclass
class Trained:
    result: train.Result
    data_path: Path
    root: Path
    output: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """One run of the training CLI against a fresh SQLite MLflow store, all in a temp folder."""
    root = tmp_path_factory.mktemp("mlflow")
    data_path = data.write(data.generate(rows=2_000, seed=0), root / "asset" / "train.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)  # a new experiment's artifacts go to ./mlruns
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            result = train.main(["--data", str(data_path.parent), "--run-name", "unit-test"])
        yield Trained(result, data_path, root, output.getvalue())


def test_cli_train_logs_params_metrics_and_roc_curve(trained: Trained) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(trained.result.run_id)
    assert run.info.run_name == "unit-test"
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) >= {"Accuracy", "AUC"}
    assert run.data.metrics["AUC"] == pytest.approx(trained.result.metrics["AUC"])
    assert 0.8 < run.data.metrics["AUC"] < 0.95
    assert run.data.params["reg_rate"] == "0.01"
    assert run.data.params["solver"] == "liblinear"
    assert (run.data.params["train_rows"], run.data.params["test_rows"]) == ("1400", "600")
    assert run.data.params["features"].split(",") == data.FEATURES
    assert "roc_curve.png" in [artifact.path for artifact in client.list_artifacts(run.info.run_id)]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "diabetes"
    assert str(trained.root) in experiment.artifact_location
    assert trained.result.run_id in trained.output
    assert "AUC" in trained.output


def test_cli_train_logs_a_model_with_a_signature(trained: Trained) -> None:
    import mlflow

    run = mlflow.get_run(trained.result.run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert [model.source_run_id for model in models] == [trained.result.run_id]
    assert models[0].model_id == trained.result.model_id
    assert models[0].name == "model"
    info = mlflow.models.get_model_info(f"models:/{trained.result.model_id}")
    assert info.signature is not None
    assert info.signature.inputs.input_names() == data.FEATURES
    assert info.signature.outputs is not None


def test_logged_model_predicts_classes_and_evaluates(trained: Trained) -> None:
    import mlflow.sklearn

    uri = f"models:/{trained.result.model_id}"
    patients = data.generate(rows=300, seed=5)
    model = mlflow.sklearn.load_model(uri)
    assert set(model.predict(patients[data.FEATURES])) <= {0, 1}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        evaluate.main(["--model-uri", uri, "--data", str(trained.data_path)])
    metrics = json.loads(output.getvalue())
    assert set(metrics) == {"Accuracy", "AUC", "precision", "recall", "rows"}
    assert metrics["rows"] == 2_000
    assert 0.8 < metrics["AUC"] < 0.95
