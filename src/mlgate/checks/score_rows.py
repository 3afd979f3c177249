"""The sandbox's scoring entry point: one model folder's predictions on rows the control plane wrote.

Run as `python -m mlgate.checks.score_rows --model DIR --rows FILE --out FILE` inside the sandbox
(`services.registration.scoring` starts it), never in the server: loading an MLflow model runs its code (pickles,
`load_context`). The rows are features only (Parquet, CSV or MLflow split JSON); the predictions go
to `--out` as plain JSON (`PREDICTIONS_FORMAT`), which the control plane reads as data and checks.
Anything else this process writes or prints is ignored, except its exit status and stderr's tail.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

PREDICTIONS_FORMAT = "mlgate.predictions/1"
EXIT_MODEL_FAILED = 3  # the model could not be loaded or could not score the rows
EXIT_BAD_ANSWER = 4  # the model answered something that is not 1 or 2 dimensional


def read_rows(path: Path) -> Any:
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    split = json.loads(path.read_text())
    return pd.DataFrame(split["data"], columns=split["columns"])


def scores(folder: Path, frame: Any, *, probabilities: bool) -> Any:
    """The positive class's probability when asked and the model is a scikit-learn classifier, else
    its pyfunc predictions. Kept here, not in the MLflow adapter the server imports, so that no server
    code path can load a model."""
    import mlflow.pyfunc

    mlmodel = folder / "MLmodel"
    if probabilities and mlmodel.is_file() and "sklearn:" in mlmodel.read_text():
        import mlflow.sklearn

        native = mlflow.sklearn.load_model(str(folder))
        if hasattr(native, "predict_proba"):
            return native.predict_proba(frame)[:, -1]
    return mlflow.pyfunc.load_model(str(folder)).predict(frame)


def as_document(result: Any, rows: int) -> dict[str, Any]:
    """The predictions as JSON-ready columns: `names` when the model answered a table."""
    import numpy as np
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        names: list[str] | None = [str(c) for c in result.columns]
        columns = [result[c].tolist() for c in result.columns]
        ndim = 2
    else:
        array = np.asarray(result.to_numpy() if isinstance(result, pd.Series) else result)
        if array.ndim not in (1, 2):
            raise ValueError(f"the model's predictions have {array.ndim} dimensions; expected 1 or 2")
        names, ndim = None, array.ndim
        columns = [array.tolist()] if array.ndim == 1 else [array[:, i].tolist() for i in range(array.shape[1])]
    return {"format": PREDICTIONS_FORMAT, "rows": rows, "ndim": ndim, "names": names, "columns": columns}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlgate.checks.score_rows")
    parser.add_argument("--model", type=Path, required=True, help="an MLflow model folder")
    parser.add_argument("--rows", type=Path, required=True, help="features: .parquet, .csv or split .json")
    parser.add_argument("--out", type=Path, required=True, help="where the predictions' JSON goes")
    parser.add_argument("--probabilities", action="store_true", help="a classifier's positive-class probability")
    args = parser.parse_args(argv)
    frame = read_rows(args.rows)
    try:
        result = scores(args.model, frame, probabilities=args.probabilities)
    except Exception as exc:  # whatever the model's own code raises
        print(f"the model failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_MODEL_FAILED
    try:
        document = as_document(result, len(frame))
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_ANSWER
    args.out.write_text(json.dumps(document, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
