"""Train the diabetes classifier and log it to MLflow.

Plain MLflow: the tracking server comes from ``MLFLOW_TRACKING_URI`` (MLflow's own default when it
is unset). One run in the experiment, with the parameters, the metrics ``Accuracy`` and ``AUC``, a
ROC curve and the model.

    python -m diabetes.train --data data/diabetes.csv --reg-rate 0.01
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy
import pandas
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from diabetes.data import FEATURES, LABEL, read
from diabetes.evaluate import evaluate, roc_figure

SOLVER = "liblinear"
TEST_SIZE = 0.30
RANDOM_STATE = 0


@dataclass(frozen=True)
class Split:
    X_train: pandas.DataFrame
    X_test: pandas.DataFrame
    y_train: pandas.Series
    y_test: pandas.Series


@dataclass(frozen=True)
class Result:
    run_id: str
    model_id: str
    metrics: dict[str, float]


def split(df: pandas.DataFrame) -> Split:
    """The 70/30 train/test split of the features and the label (fixed random state)."""
    X_train, X_test, y_train, y_test = train_test_split(
        df[FEATURES], df[LABEL], test_size=TEST_SIZE, random_state=RANDOM_STATE
    )
    return Split(X_train, X_test, y_train, y_test)


def fit(X: pandas.DataFrame, y: pandas.Series, reg_rate: float = 0.01) -> LogisticRegression:
    """A logistic regression with regularisation rate ``reg_rate`` (C = 1 / reg_rate)."""
    if reg_rate <= 0:
        raise ValueError("reg_rate must be positive")
    return LogisticRegression(C=1 / reg_rate, solver=SOLVER).fit(X, y)


def train(
    data: Path | str,
    reg_rate: float = 0.01,
    experiment: str = "diabetes",
    run_name: str | None = None,
) -> Result:
    """Train on the patients at ``data`` and log one MLflow run; return its ids and metrics."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    parts = split(read(data))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(
            {
                "reg_rate": reg_rate,
                "solver": SOLVER,
                "train_rows": len(parts.X_train),
                "test_rows": len(parts.X_test),
                "features": ",".join(FEATURES),
            }
        )
        model = fit(parts.X_train, parts.y_train, reg_rate)
        test = parts.X_test.assign(**{LABEL: parts.y_test})
        scores = evaluate(model, test)
        metrics = {"Accuracy": scores["Accuracy"], "AUC": scores["AUC"]}
        mlflow.log_metrics(metrics)
        mlflow.log_figure(
            roc_figure(parts.y_test, model.predict_proba(parts.X_test)[:, 1]), "roc_curve.png"
        )
        predictions = model.predict(parts.X_test)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(parts.X_test, predictions),
            input_example=parts.X_train.head(5),
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"pandas=={pandas.__version__}",
                f"numpy=={numpy.__version__}",
            ],
        )
    return Result(run_id=run.info.run_id, model_id=info.model_id, metrics=metrics)


def main(argv: list[str] | None = None) -> Result:
    parser = argparse.ArgumentParser(description="Train the diabetes classifier, log to MLflow.")
    parser.add_argument("--data", type=Path, required=True, help="CSV/Parquet file or folder")
    parser.add_argument("--reg-rate", type=float, default=0.01, help="regularisation rate")
    parser.add_argument("--experiment", default="diabetes", help="MLflow experiment name")
    parser.add_argument("--run-name", default=None, help="MLflow run name")
    args = parser.parse_args(argv)
    result = train(args.data, args.reg_rate, args.experiment, args.run_name)
    print(
        f"run {result.run_id}  model {result.model_id}  "
        f"Accuracy {result.metrics['Accuracy']:.4f}  AUC {result.metrics['AUC']:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
