"""Benchmark: mlgate's drift signals against Evidently's data drift preset, 1,000,000 rows x 8 features.

    .venv/bin/python bench/drift.py [--rows 1000000] [--repeat 5] [--evidently-repeat 1] [--skip-evidently]

The data is the diabetes example's own (examples/diabetes): the reference is the 10,000 training patients
mlgate's demo registers (seed 0), profiled as registration profiles them (`mlgate.domain.profile`; the
sample is all 10,000 rows); the current window is 1,000,000 patients of the example's drifted population
(`drift=True`, seed 1: older, higher glucose and BMI, so some features drift and others barely move). mlgate:
`drift_report` with all four numeric measures (PSI, Jensen-Shannon, normalized Wasserstein, KS with its
p-value) for every feature, in this process. Evidently: `Report([DataDriftPreset()])` on the same two frames,
in its own virtual environment (Evidently 0.7 needs pandas < 3; mlgate's has pandas 3), made the first time
under ~/.cache/mlgate-bench/evidently-venv; the data goes there as .npy files. Each tool is timed from
arrays in memory to its per-column results (Evidently: `Dataset.from_pandas` + `Report.run`), best and
median of the repeats. Prints the timing table and the per-feature values side by side. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mlgate.domain.drift import DriftReport

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "diabetes" / "src"
REFERENCE_ROWS = 10_000
EVIDENTLY = ["evidently==0.7.*", "pandas<3"]
DEFAULT_VENV = Path.home() / ".cache" / "mlgate-bench" / "evidently-venv"
EVIDENTLY_SCRIPT = """
import json, statistics, sys, time
import numpy as np, pandas as pd
import evidently
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

folder, repeat = sys.argv[1], int(sys.argv[2])
columns = json.load(open(f"{folder}/columns.json"))
reference = pd.DataFrame(np.load(f"{folder}/reference.npy"), columns=columns)
current = pd.DataFrame(np.load(f"{folder}/current.npy"), columns=columns)
definition = DataDefinition(numerical_columns=columns)
times = []
for _ in range(repeat):
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    times.append(time.perf_counter() - started)
result = {"version": evidently.__version__, "pandas": pd.__version__, "seconds": times, "columns": {}}
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config["type"].endswith("ValueDrift"):
        value = metric["value"]
        result["columns"][config["column"]] = {
            "method": config["method"], "value": float(value), "drifted": bool(value >= config["threshold"]),
        }
    elif config["type"].endswith("DriftedColumnsCount"):
        result["share"] = float(metric["value"]["share"])
        result["dataset_drift"] = bool(metric["value"]["share"] >= config["drift_share"])
print(json.dumps(result))
"""


def diabetes(rows: int, seed: int, drift: bool) -> dict[str, np.ndarray]:
    """The example's patients (its generator, imported from examples/diabetes) as float64 feature columns."""
    sys.path.insert(0, str(EXAMPLE_SRC))
    from diabetes import data  # the example's own generator

    frame = data.generate(rows=rows, seed=seed, drift=drift)
    return {name: frame[name].to_numpy(dtype=np.float64) for name in data.FEATURES}


def evidently_python(venv: Path) -> Path:
    """The Evidently venv's interpreter; the venv is made (python -m venv + pip install) the first time."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} with {' '.join(EVIDENTLY)} (first run only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *EVIDENTLY], check=True)
    return python


def run_evidently(
    python: Path, reference: dict[str, np.ndarray], current: dict[str, np.ndarray], repeat: int
) -> dict[str, Any]:
    columns = list(reference)
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-drift-") as tmp:
        folder = Path(tmp)
        np.save(folder / "reference.npy", np.column_stack([reference[c] for c in columns]))
        np.save(folder / "current.npy", np.column_stack([current[c] for c in columns]))
        (folder / "columns.json").write_text(json.dumps(columns))
        (folder / "run.py").write_text(EVIDENTLY_SCRIPT)
        done = subprocess.run(
            [str(python), str(folder / "run.py"), str(folder), str(repeat)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DO_NOT_TRACK": "1"},  # Evidently's telemetry off
        )
    if done.returncode != 0:
        raise SystemExit(f"the Evidently run failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the current window")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of mlgate's drift report")
    parser.add_argument("--evidently-repeat", type=int, default=1, help="timed runs of Evidently's report")
    parser.add_argument("--evidently-venv", type=Path, default=DEFAULT_VENV, help="where Evidently's venv lives")
    parser.add_argument("--skip-evidently", action="store_true", help="time mlgate only")
    return parser.parse_args()


def _time_mlgate(
    reference: dict[str, np.ndarray], current: dict[str, np.ndarray], repeat: int
) -> tuple[DriftReport, list[float]]:
    """mlgate's drift report of `current` against `reference` (profiled as registration profiles it), and the
    seconds each of the `repeat` timed runs took."""
    from mlgate.domain import profile as profiles
    from mlgate.domain.drift import drift_report

    profile = profiles.build_profile(
        data="diabetes@1",
        rows=REFERENCE_ROWS,
        features=reference,
        label=None,
        predictions=None,
        sample={"rows": REFERENCE_ROWS},
        notes=[],
    )

    print(f"timing mlgate's drift_report, {repeat} runs ...", flush=True)
    drift_report(profile, reference, current)  # warm-up
    mlgate_times = []
    for _ in range(repeat):
        started = time.perf_counter()
        report = drift_report(profile, reference, current)
        mlgate_times.append(time.perf_counter() - started)
    return report, mlgate_times


def _print_timings(
    report: DriftReport, mlgate_times: list[float], evidently: dict[str, Any] | None, shape: str
) -> None:
    import scipy

    print()
    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
        + (f"; Evidently {evidently['version']} with pandas {evidently['pandas']}" if evidently else "")
    )
    print()
    print("| tool | current rows x features | best s | median s | drifted features | dataset drift |")
    print("|---|---|---:|---:|---:|---|")
    best, median = min(mlgate_times), statistics.median(mlgate_times)
    print(
        f"| mlgate drift_report (PSI, JS, W/std, KS + p) | {shape} | {best:.3f} | {median:.3f} | "
        f"{report.drifted}/{report.judged} | {report.dataset_drift} |"
    )
    if evidently:
        times = evidently["seconds"]
        drifted = sum(1 for c in evidently["columns"].values() if c["drifted"])
        print(
            f"| Evidently Report([DataDriftPreset()]) | {shape} | {min(times):.3f} | {statistics.median(times):.3f} | "
            f"{drifted}/{len(evidently['columns'])} | {evidently['dataset_drift']} |"
        )
        print()
        print(
            f"Evidently / mlgate: {min(times) / best:.1f}x (best), "
            f"{statistics.median(times) / median:.1f}x (median); mlgate target < 2 s: "
            f"{'met' if best < 2 else 'not met'} ({best:.3f} s)"
        )


def _print_features(report: DriftReport, evidently: dict[str, Any] | None) -> None:
    print()
    print("| feature | mlgate W/std | Evidently (method) | PSI | JS | KS | KS p | drifted (mlgate / Evidently) |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    for column in report.columns:
        m = column.measures
        theirs = evidently["columns"].get(column.name) if evidently else None
        other = f"{theirs['value']:.4f} ({theirs['method']})" if theirs else "-"
        verdicts = f"{column.drifted} / {theirs['drifted'] if theirs else '-'}"
        print(
            f"| {column.name} | {m['wasserstein_norm']:.4f} | {other} | {m['psi']:.4f} | "
            f"{m['jensen_shannon']:.4f} | {m['ks_statistic']:.4f} | {m['ks_pvalue']:.3g} | {verdicts} |"
        )


def main() -> int:
    args = _arguments()
    print(f"generating {REFERENCE_ROWS:,} reference and {args.rows:,} drifted current patients ...", flush=True)
    reference = diabetes(REFERENCE_ROWS, seed=0, drift=False)
    current = diabetes(args.rows, seed=1, drift=True)
    report, mlgate_times = _time_mlgate(reference, current, args.repeat)

    evidently: dict[str, Any] | None = None
    if not args.skip_evidently:
        python = evidently_python(args.evidently_venv)
        print(f"timing Evidently's DataDriftPreset, {args.evidently_repeat} run(s) ...", flush=True)
        evidently = run_evidently(python, reference, current, args.evidently_repeat)

    _print_timings(report, mlgate_times, evidently, f"{args.rows:,} x {len(reference)}")
    _print_features(report, evidently)
    return 0


if __name__ == "__main__":
    sys.exit(main())
