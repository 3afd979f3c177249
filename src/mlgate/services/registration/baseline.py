"""The baseline profile of a model at registration: its training data asset, label and predictions.

The data asset's rows are read with pandas; the features are the model's signature inputs; the label
is the one named (`--label`, or the project's `train.label`), else the one data column that is neither
an input nor an id, if there is exactly one. Predictions come from the model itself, on a seeded sample
of up to 10,000 rows, which is kept beside the profile (`sample.csv`) for checks that need raw values.
The model scores that sample in the sandbox (`services.registration.scoring`): this process reads data, never a model.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.config import Environment
from mlgate.domain import profile as profiles
from mlgate.errors import ValidationError
from mlgate.services.registration.scoring import Predictions
from mlgate.services.training import data_assets

SAMPLE_FILE = "sample.csv"
PROFILE_FILE = "profile.json"
# PatientID, patient_id, ID, customer-id; not "paid" or "valid".
ID_NAME = re.compile(r"^(id|ID|Id)$|[_\-\s.](id|ID|Id)$|[a-z0-9](ID|Id)$")

# The model folder's predictions on a frame of its inputs: `registration.scoring.SandboxScorer`, bound to the model.
Predict = Callable[[Path, Any], Predictions]


@dataclass(frozen=True)
class Baseline:
    profile: dict[str, Any]  # the summary: every column's stats and bins, and where the sample is
    sample_csv: bytes
    label: str | None


def read_frame(env: Environment, asset: data_assets.DataAssetView) -> Any:
    """A data asset's rows as one pandas frame (CSV or Parquet files, concatenated)."""
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="mlgate-baseline-") as tmp:
        root = data_assets.materialize(env, asset, Path(tmp) / asset.name)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        reader = pd.read_csv if asset.format == "csv" else pd.read_parquet
        frames = [reader(path) for path in files]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _values(series: Any) -> Any:
    """A pandas column as what the profile takes: float64 with NaN if numeric, else objects with None."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    return series.astype(object).where(series.notna(), None).to_numpy()


def _id_like(series: Any, name: str) -> bool:
    import pandas as pd

    if ID_NAME.search(name):
        return True
    distinct_everywhere = len(series) > 1 and series.nunique(dropna=False) == len(series)
    return bool(distinct_everywhere and not pd.api.types.is_float_dtype(series))


def choose_label(frame: Any, *, features: list[str], named: str | None) -> tuple[str | None, str | None]:
    """The label column and, when there is none, why."""
    columns = [str(c) for c in frame.columns]
    if named is not None:
        if named not in columns:
            raise ValidationError(
                f"the label column '{named}' is not in the training data; its columns are: {', '.join(columns)}",
                details={"label": named, "columns": columns},
            )
        return named, None
    candidates = [c for c in columns if c not in features and not _id_like(frame[c], c)]
    if len(candidates) == 1:
        return candidates[0], None
    reason = (
        f"several columns could be the label ({', '.join(candidates)})"
        if candidates
        else "every column is a model input or an id"
    )
    return None, f"no label profiled: {reason}; name it with --label or `train.label` in mlgate.yaml"


def _prediction_columns(result: Predictions, rows: int) -> dict[str, Any]:
    import pandas as pd

    if result.names is not None:
        names = [f"prediction.{name}" for name in result.names]
    elif result.ndim == 1:
        names = ["prediction"]
    else:
        names = [f"prediction[{i}]" for i in range(len(result.columns))]
    columns = {name: pd.Series(values) for name, values in zip(names, result.columns, strict=True)}
    for name, series in columns.items():
        if len(series) != rows:
            raise ValidationError(f"the model returned {len(series)} values of {name} for {rows} rows")
    return columns


def make_baseline(
    env: Environment,
    asset: data_assets.DataAssetView,
    *,
    inputs: list[str] | None,
    label: str | None,
    model_folder: Path,
    predict: Predict,
) -> Baseline:
    """Profile the training data asset: the model's inputs, the label, and the model's predictions."""
    import pandas as pd

    frame = read_frame(env, asset)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if inputs:
        missing = [c for c in inputs if c not in columns]
        if missing:
            raise ValidationError(
                f"the training data {asset.ref} lacks the model's input column(s) {', '.join(missing)}; "
                "pass the data the model was trained on with --data NAME@VERSION",
                details={"data": asset.ref, "missing": missing},
            )
        features = list(inputs)
    else:  # a tensor signature names no columns: every data column but the label and ids
        features = [c for c in columns if c != label and not _id_like(frame[c], c)]
    label_column, note = choose_label(frame, features=features, named=label)
    notes = [note] if note else []
    features = [c for c in features if c != label_column]

    positions = profiles.sample_indices(len(frame))
    sample = frame.iloc[positions].reset_index(drop=True)
    predictions: dict[str, Any] | None = None
    try:
        predictions = _prediction_columns(predict(model_folder, sample[features]), len(sample))
    except ValidationError as exc:  # the model failed, was too slow or answered nonsense; not the sandbox
        notes.append(f"no prediction profile: the model could not score the training sample: {exc.message}")

    kept = sample[[*features, *([label_column] if label_column else [])]]
    if predictions:
        kept = pd.concat([kept, pd.DataFrame(predictions)], axis=1)
    sample_csv = kept.to_csv(index=False, lineterminator="\n").encode()
    summary = profiles.build_profile(
        data=asset.ref,
        rows=len(frame),
        features={c: _values(frame[c]) for c in features},
        label=(label_column, _values(frame[label_column])) if label_column else None,
        predictions={name: _values(s) for name, s in predictions.items()} if predictions else None,
        sample={
            "file": SAMPLE_FILE,
            "rows": len(sample),
            "seed": profiles.SAMPLE_SEED,
            "sha256": hashlib.sha256(sample_csv).hexdigest(),
        },
        notes=notes,
    )
    return Baseline(profile=summary, sample_csv=sample_csv, label=label_column)
