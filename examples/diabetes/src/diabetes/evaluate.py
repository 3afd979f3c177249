"""Score a diabetes model on labelled patients.

The metrics are the ones the training run logs (``Accuracy``, ``AUC``) plus precision and recall:

    python -m diabetes.evaluate --model-uri models:/<model-id> --data data/diabetes.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from diabetes.data import FEATURES, LABEL, read


def evaluate(model: Any, df: pd.DataFrame) -> dict[str, float | int]:
    """Accuracy, AUC, precision and recall of ``model`` on ``df`` (features and the label)."""
    X, y = df[FEATURES], df[LABEL].to_numpy()
    predictions = model.predict(X)
    scores = model.predict_proba(X)[:, 1]
    return {
        "Accuracy": float(accuracy_score(y, predictions)),
        "AUC": float(roc_auc_score(y, scores)),
        "precision": float(precision_score(y, predictions, zero_division=0)),
        "recall": float(recall_score(y, predictions, zero_division=0)),
        "rows": len(df),
    }


def roc_figure(y_true: np.ndarray | pd.Series, scores: np.ndarray) -> Figure:
    """The ROC curve of ``scores`` against ``y_true``.

    A bare ``Figure`` (no pyplot): it renders with Agg, needs no display and is not kept alive by
    pyplot's figure registry.
    """
    false_positive_rate, true_positive_rate, _ = roc_curve(y_true, scores)
    auc = roc_auc_score(y_true, scores)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.plot(false_positive_rate, true_positive_rate, label=f"model (AUC = {auc:.3f})")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a logged diabetes model.")
    parser.add_argument("--model-uri", required=True, help="MLflow model URI, e.g. models:/<id>")
    parser.add_argument("--data", type=Path, required=True, help="CSV/Parquet file or folder")
    args = parser.parse_args(argv)

    import mlflow.sklearn

    model = mlflow.sklearn.load_model(args.model_uri)
    print(json.dumps(evaluate(model, read(args.data)), indent=2))


if __name__ == "__main__":
    main()
