"""The `model-validation` check as a job: a candidate model scored on held-out rows, against a floor and
against the production champion scored on the same rows; and `predict`, a model's answers on rows.

Run by the server as `python -m mlgate.checks.model_validation validate ...` in a job folder, so that
MLflow, pandas and the model's own code are loaded there and never in the server. The result is one
JSON object in `--out`: status (passed | failed), summary, and the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "f1": True, "r2": True, "rmse": False}


def _inputs(folder: Path) -> list[str] | None:
    from mlgate.adapters.mlflow.registry import read_model_folder

    signature = read_model_folder(folder).signature or {}
    names = [str(c["name"]) for c in signature.get("inputs") or [] if isinstance(c, dict) and c.get("name")]
    return names or None


def metric_value(metric: str, truth: Any, answers: Any) -> float:
    import numpy as np
    from sklearn import metrics

    answers = np.asarray(answers, dtype=float).reshape(len(truth), -1)[:, -1]
    if metric == "roc_auc":
        return float(metrics.roc_auc_score(truth, answers))
    if metric == "accuracy":
        return float(metrics.accuracy_score(truth, (answers >= 0.5).astype(int)))
    if metric == "f1":
        return float(metrics.f1_score(truth, (answers >= 0.5).astype(int)))
    if metric == "r2":
        return float(metrics.r2_score(truth, answers))
    return float(math.sqrt(metrics.mean_squared_error(truth, answers)))


def _score(folder: Path, frame: Any, metric: str) -> Any:
    from mlgate.adapters.mlflow.registry import scores

    columns = _inputs(folder)
    rows = frame[columns] if columns else frame
    return scores(folder, rows, probabilities=metric == "roc_auc")


def validate(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    frame = pd.read_csv(args.data)
    label = args.label
    columns = _inputs(args.model) or []
    if label is None:
        rest = [c for c in frame.columns if c not in columns]
        if len(rest) != 1 or not columns:
            return {
                "status": "failed",
                "summary": "cannot tell the label column of the validation data: set checks.model-validation.label",
            }
        label = rest[0]
    if label not in frame.columns:
        return {"status": "failed", "summary": f"the validation data has no label column '{label}'"}
    frame = frame.dropna(subset=[label])
    truth = frame[label]
    higher = HIGHER_IS_BETTER[args.metric]
    value = metric_value(args.metric, truth, _score(args.model, frame, args.metric))
    result: dict[str, Any] = {"metric": args.metric, "value": value, "rows": len(frame), "label": label}
    problems, notes = [], [f"{args.metric} {value:.4f} on {len(frame)} held-out rows"]
    if args.min is not None:
        below = value < args.min if higher else value > args.min
        if below:
            problems.append(f"{args.metric} {value:.4f} is {'below' if higher else 'above'} the bar {args.min:g}")
    if args.champion is None:
        notes.append("no production champion to compare with")
    else:
        champion = metric_value(args.metric, truth, _score(args.champion, frame, args.metric))
        regression = (champion - value) if higher else (value - champion)
        result |= {"champion_value": champion, "regression": regression, "champion": args.champion_name}
        notes.append(f"champion {args.champion_name} {champion:.4f} on the same rows")
        if args.max_regression is not None and regression > args.max_regression:
            problems.append(
                f"{args.metric} regresses by {regression:.4f} against the champion {args.champion_name} "
                f"(at most {args.max_regression:g} allowed)"
            )
    result["status"] = "failed" if problems else "passed"
    result["summary"] = "; ".join(problems or notes)
    return result


def predict(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from mlgate.adapters.mlflow.registry import scores

    split = json.loads(Path(args.rows).read_text())
    frame = pd.DataFrame(split["data"], columns=split["columns"])
    answers = np.asarray(scores(args.model, frame, probabilities=False))
    return {"predictions": answers.tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlgate.checks.model_validation")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="score a model on held-out rows against a floor and a champion")
    check.add_argument("--model", type=Path, required=True)
    check.add_argument("--data", type=Path, required=True)
    check.add_argument("--metric", choices=sorted(HIGHER_IS_BETTER), default="roc_auc")
    check.add_argument("--label")
    check.add_argument("--min", type=float)
    check.add_argument("--max-regression", type=float)
    check.add_argument("--champion", type=Path)
    check.add_argument("--champion-name", default="champion")
    check.add_argument("--out", type=Path, required=True)
    answer = commands.add_parser("predict", help="a model's answers on rows given as MLflow split JSON")
    answer.add_argument("--model", type=Path, required=True)
    answer.add_argument("--rows", type=Path, required=True)
    answer.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        result = validate(args) if args.command == "validate" else predict(args)
    except Exception as exc:  # the model's own code, a broken file: the check fails, saying why
        result = {"status": "error", "summary": f"{type(exc).__name__}: {exc}"}
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))
    return 0 if result.get("status", "passed") == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
