"""The synthetic patients: deterministic, the clinic's columns and ranges, a plausible label."""

from __future__ import annotations

import pandas as pd
import pytest

from diabetes import data


@pytest.fixture(scope="module")
def patients() -> pd.DataFrame:
    return data.generate(rows=10_000, seed=0)


@pytest.fixture(scope="module")
def drifted() -> pd.DataFrame:
    return data.generate(rows=10_000, seed=0, drift=True)


def test_columns_are_the_clinics(patients: pd.DataFrame) -> None:
    assert list(patients.columns) == [
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
    assert len(patients) == 10_000


def test_integers_where_the_real_data_has_integers(patients: pd.DataFrame) -> None:
    for name in ["PatientID", *data.INTEGER_FEATURES, "Diabetic"]:
        assert pd.api.types.is_integer_dtype(patients[name]), name
    for name in ["BMI", "DiabetesPedigree"]:
        assert pd.api.types.is_float_dtype(patients[name]), name
    assert set(patients["Diabetic"].unique()) == {0, 1}


def test_patient_ids_are_unique(patients: pd.DataFrame) -> None:
    assert patients["PatientID"].is_unique
    assert patients["PatientID"].min() >= 1_000_000


@pytest.mark.parametrize("drift", [False, True])
def test_values_stay_in_the_clinics_ranges(drift: bool) -> None:
    frame = data.generate(rows=10_000, seed=0, drift=drift)
    for name, (low, high) in data.RANGES.items():
        assert frame[name].between(low, high).all(), name
        # Spread over the range, not piled up at one value.
        assert frame[name].nunique() > 10, name
    assert not frame.isna().any().any()


def test_about_a_third_are_diabetic(patients: pd.DataFrame) -> None:
    assert 0.30 <= patients["Diabetic"].mean() <= 0.37
    for seed in (1, 2, 3):
        assert 0.30 <= data.generate(rows=10_000, seed=seed)["Diabetic"].mean() <= 0.37


def test_same_arguments_same_patients(patients: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(patients, data.generate(rows=10_000, seed=0))
    assert not patients.equals(data.generate(rows=10_000, seed=1))


def test_drift_makes_the_population_older_with_higher_glucose_and_bmi(
    patients: pd.DataFrame, drifted: pd.DataFrame
) -> None:
    assert drifted["Age"].mean() > patients["Age"].mean() + 3
    assert drifted["PlasmaGlucose"].mean() > patients["PlasmaGlucose"].mean() + 5
    assert drifted["BMI"].mean() > patients["BMI"].mean() + 1


def test_rows_must_be_positive() -> None:
    with pytest.raises(ValueError):
        data.generate(rows=0)


def test_cli_writes_byte_identical_csv_into_new_folders(tmp_path) -> None:
    first, second = tmp_path / "a" / "patients.csv", tmp_path / "b" / "c" / "patients.csv"
    data.main(["--rows", "500", "--seed", "3", "--out", str(first)])
    data.main(["--rows", "500", "--seed", "3", "--out", str(second)])
    assert first.read_bytes() == second.read_bytes()
    pd.testing.assert_frame_equal(data.read(first), data.generate(rows=500, seed=3))


def test_cli_writes_parquet_and_read_takes_a_folder(tmp_path) -> None:
    out = tmp_path / "asset" / "patients.parquet"
    data.main(["--rows", "200", "--seed", "1", "--drift", "--out", str(out)])
    expected = data.generate(rows=200, seed=1, drift=True)
    pd.testing.assert_frame_equal(data.read(out), expected)
    pd.testing.assert_frame_equal(data.read(out.parent), expected)


def test_read_an_empty_folder_fails(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        data.read(tmp_path)
