"""Loading a slot's model folder: digest check, native scikit-learn fast path or pyfunc, warm-up.

The server already verified the copy it placed under ``serving/<digest>/``; the host checks again
before loading, with the same algorithm (``mlgate.domain.digest``), so a byte changed in between is
refused. It loads nothing from outside the folder: a path MLmodel names, or a symlink, that leaves it
is refused before anything is unpickled (``mlgate.domain.model_files``). Loading a scikit-learn model
does not import MLflow or pandas: the array built from the JSON goes straight to the estimator's
``predict``. Other flavors go through ``mlflow.pyfunc`` (imported then).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlgate.domain.digest import tree_digest
from mlgate.domain.model_files import check_references, check_symlinks
from mlgate.errors import ValidationError
from mlgate.serving.errors import ServingError, SpecRejected
from mlgate.serving.linear import linear_predict
from mlgate.serving.signature import Signature, parse_signature, rows_from_mlflow, to_matrix, v2_datatype

Predict = Callable[[np.ndarray], np.ndarray]
PANDAS_DTYPES = {"long": "int64", "integer": "int32", "double": "float64", "float": "float32", "boolean": "bool"}
EXAMPLE_VALUES: dict[str, Any] = {"long": 0, "integer": 0, "double": 0.0, "float": 0.0, "boolean": False}


@dataclass(frozen=True)
class LoadedModel:
    model_dir: str
    digest: str
    signature: Signature
    predict: Predict
    flavor: str
    load_seconds: float
    output_datatype: str


def _as_array(result: Any) -> np.ndarray:
    if hasattr(result, "to_numpy"):  # a pandas object from a pyfunc model
        result = result.to_numpy()
    return np.asarray(result)


def _load_sklearn(model_dir: Path, conf: dict[str, Any]) -> Any:
    path = model_dir / conf.get("pickled_model", "model.pkl")
    fmt = conf.get("serialization_format", "pickle")
    if fmt == "skops":
        import skops.io  # type: ignore[import-untyped]

        return skops.io.load(path, trusted=conf.get("skops_trusted_types"))
    with path.open("rb") as handle:
        if fmt == "cloudpickle":
            import cloudpickle  # type: ignore[import-untyped]

            return cloudpickle.load(handle)
        # The folder's digest was checked against the one the control plane verified and pushed.
        return pickle.load(handle)  # noqa: S301


def _native_predict(model: Any, signature: Signature, example: np.ndarray) -> tuple[Predict, str]:
    """A plain linear estimator as one matrix product (checked against its own predict); otherwise the
    estimator on a plain array; a DataFrame only if the estimator needs column names."""
    fast = linear_predict(model, example)
    if fast is not None:
        return fast, "sklearn"
    try:
        model.predict(example)
        return model.predict, "sklearn"
    except Exception:  # e.g. a ColumnTransformer selecting columns by name
        import pandas as pd

        names = signature.names
        return (lambda x: model.predict(pd.DataFrame(x, columns=names))), "sklearn+pandas"


def _pyfunc_predict(model_dir: Path, signature: Signature) -> Predict:
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(model_dir))
    names = signature.names
    dtypes = {c.name: PANDAS_DTYPES.get(c.type, "object") for c in signature.columns}

    def predict(x: np.ndarray) -> np.ndarray:
        return _as_array(model.predict(pd.DataFrame(x, columns=names).astype(dtypes)))

    return predict


def _example(model_dir: Path, mlmodel: dict[str, Any], signature: Signature) -> np.ndarray:
    info = mlmodel.get("saved_input_example_info") or {}
    path = model_dir / str(info.get("artifact_path", "input_example.json"))
    if info.get("type", "dataframe") == "dataframe" and path.is_file():
        raw = json.loads(path.read_text())
        payload = {"dataframe_split": raw} if isinstance(raw, dict) and "data" in raw else {"dataframe_records": raw}
        return to_matrix(rows_from_mlflow(payload, signature), signature)
    # No example saved: warm up on one neutral row so a broken model still fails before it is live.
    row = [EXAMPLE_VALUES.get(c.type, "") for c in signature.columns]
    return to_matrix([row], signature)


def load_model(*, model_dir: str, digest: str, signature: Any | None) -> LoadedModel:
    """Verify, load and warm up one model folder; SpecRejected says why it cannot serve."""
    started = time.perf_counter()
    root = Path(model_dir)
    if not (root / "MLmodel").is_file():
        raise SpecRejected(f"{model_dir} is not an MLflow model folder (no MLmodel file)")
    actual = tree_digest(root)
    if actual != digest:
        raise SpecRejected(
            f"digest mismatch for {model_dir}: the spec expects {digest} but the folder's content is {actual}; "
            "refusing to load it"
        )
    try:
        check_symlinks(root)
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
        check_references(root, mlmodel)
    except ValidationError as exc:
        raise SpecRejected(f"{model_dir}: {exc.message}; refusing to load it") from exc
    try:
        sig = parse_signature(signature if signature is not None else (mlmodel.get("signature") or {}))
    except (ValueError, TypeError) as exc:
        raise SpecRejected(f"{model_dir}: unusable signature: {exc}") from exc
    try:
        example = _example(root, mlmodel, sig)
        flavors = mlmodel.get("flavors") or {}
        if "sklearn" in flavors:
            predict, flavor = _native_predict(_load_sklearn(root, flavors["sklearn"]), sig, example)
        else:
            predict, flavor = _pyfunc_predict(root, sig), "pyfunc"
        out = _as_array(predict(example))
    except ServingError as exc:
        raise SpecRejected(f"{model_dir}: warm-up on the input example failed: {exc.message}") from exc
    except Exception as exc:
        raise SpecRejected(f"{model_dir}: loading or warming up the model failed: {exc}") from exc
    if out.ndim == 0 or len(out) != len(example):
        raise SpecRejected(f"{model_dir}: the model returned {out.shape} for {len(example)} example rows")
    return LoadedModel(model_dir, digest, sig, predict, flavor, time.perf_counter() - started, v2_datatype(out))
