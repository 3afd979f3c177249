"""Synthetic diabetes patients: a seeded, deterministic stand-in for the clinic's extract.

The columns and ranges follow the clinic's real extract. The label is a noisy logistic function of
the features, so a plain logistic regression on the raw columns reaches a test AUC of about 0.88.
``drift=True`` draws from an older population with higher glucose and BMI, for monitoring demos.

    python -m diabetes.data --rows 10000 --seed 0 --out data/diabetes.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [
    "PatientID",
    "Pregnancies",
    "PlasmaGlucose",
    "DiastolicBloodPressure",
    "TricepsThickness",
    "SerumInsulin",
    "BMI",
    "DiabetesPedigree",
    "Age",
    "Diabetic",
]
FEATURES = COLUMNS[1:-1]
LABEL = "Diabetic"
ID = "PatientID"

# Inclusive (low, high) bounds of each feature, as in the clinic's extract.
RANGES: dict[str, tuple[float, float]] = {
    "Pregnancies": (0, 14),
    "PlasmaGlucose": (44, 192),
    "DiastolicBloodPressure": (24, 117),
    "TricepsThickness": (7, 92),
    "SerumInsulin": (14, 796),
    "BMI": (18.2, 56.0),
    "DiabetesPedigree": (0.078, 2.30),
    "Age": (21, 77),
}
INTEGER_FEATURES = [name for name in FEATURES if name not in ("BMI", "DiabetesPedigree")]
FIRST_PATIENT_ID = 1_000_000

# The true model: log-odds of being diabetic, per unit of each feature around its reference value.
INTERCEPT = -0.9
COEFFICIENTS: dict[str, tuple[float, float]] = {  # name -> (reference value, log-odds per unit)
    "Pregnancies": (3.0, 0.48),
    "PlasmaGlucose": (105.0, 0.0176),
    "DiastolicBloodPressure": (72.0, 0.0096),
    "TricepsThickness": (28.0, 0.016),
    "SerumInsulin": (110.0, 0.0029),
    "BMI": (31.0, 0.16),
    "DiabetesPedigree": (0.45, 1.28),
    "Age": (30.0, 0.096),
}


def _features(rng: np.random.Generator, rows: int, drift: bool) -> dict[str, np.ndarray]:
    age_scale, glucose_shift, bmi_shift = (11.0, 14.0, 3.5) if drift else (6.5, 0.0, 0.0)
    age = 21 + rng.gamma(shape=1.6, scale=age_scale, size=rows)
    pregnancies = rng.poisson(lam=np.clip(0.5 + (age - 21) * 0.18, 0.3, 8.0))
    bmi = 17.0 + bmi_shift + rng.gamma(shape=5.0, scale=2.8, size=rows)
    glucose = rng.normal(105.0 + glucose_shift, 28.0, rows) + 0.4 * (bmi - 31.0)
    pressure = rng.normal(71.0, 15.0, rows) + 0.2 * (age - 30.0)
    triceps = 5.0 + rng.gamma(shape=4.0, scale=5.8, size=rows) + 0.5 * (bmi - 31.0)
    insulin = np.exp(rng.normal(4.45, 0.75, rows)) * np.exp(0.004 * (glucose - 105.0))
    pedigree = np.exp(rng.normal(-0.95, 0.62, rows))
    return {
        "Pregnancies": pregnancies,
        "PlasmaGlucose": glucose,
        "DiastolicBloodPressure": pressure,
        "TricepsThickness": triceps,
        "SerumInsulin": insulin,
        "BMI": bmi,
        "DiabetesPedigree": pedigree,
        "Age": age,
    }


def generate(rows: int = 10_000, seed: int = 0, drift: bool = False) -> pd.DataFrame:
    """Return ``rows`` synthetic patients; the same arguments always give the same frame."""
    if rows < 1:
        raise ValueError("rows must be at least 1")
    rng = np.random.default_rng(seed)
    raw = _features(rng, rows, drift)
    frame = pd.DataFrame({ID: np.arange(FIRST_PATIENT_ID, FIRST_PATIENT_ID + rows, dtype="int64")})
    for name in FEATURES:
        low, high = RANGES[name]
        values = np.clip(raw[name], low, high)
        if name in INTEGER_FEATURES:
            frame[name] = np.rint(values).astype("int64")
        else:
            frame[name] = np.round(values, 2 if name == "BMI" else 3)
    logit = INTERCEPT + sum(
        slope * (frame[name].to_numpy(dtype=float) - reference)
        for name, (reference, slope) in COEFFICIENTS.items()
    )
    frame[LABEL] = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    # Shuffle patient IDs so row order carries no information.
    frame[ID] = rng.permutation(frame[ID].to_numpy())
    return frame[COLUMNS]


def write(frame: pd.DataFrame, out: Path) -> Path:
    """Write ``frame`` to ``out`` as CSV, or Parquet when the name ends with .parquet."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False, lineterminator="\n")
    return out


def read(path: Path | str) -> pd.DataFrame:
    """Read patients from a CSV or Parquet file, or from every such file in a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in (".csv", ".parquet")
        )
        if not files:
            raise FileNotFoundError(f"no .csv or .parquet file in {path}")
        return pd.concat([read(file) for file in files], ignore_index=True)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate synthetic diabetes patients.")
    parser.add_argument("--rows", type=int, default=10_000, help="number of patients")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--drift", action="store_true", help="older, higher-glucose population")
    parser.add_argument("--out", type=Path, required=True, help="CSV or .parquet file to write")
    args = parser.parse_args(argv)
    frame = generate(rows=args.rows, seed=args.seed, drift=args.drift)
    path = write(frame, args.out)
    print(f"wrote {len(frame)} patients ({frame[LABEL].mean():.1%} diabetic) to {path}")


if __name__ == "__main__":
    main()
