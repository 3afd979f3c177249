"""The serving host through other people's clients: NVIDIA's `tritonclient` (Open Inference Protocol v2 over
HTTP) and MLflow's own client-side payload conventions, against a real `python -m mlgate.serving` process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support import serving_host
from tests.support.serving_host import COLUMNS, PRIMARY, TYPES, Host, Models, patient_frame

if TYPE_CHECKING:
    import pandas as pd

# MLflow warns about its own type hints while it imports; only that warning is silenced.
pytestmark = pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning")

# The module-scoped fixtures (tests/support/serving_host.py), bound here so that pytest finds them: its own
# two trained models and its own host serving them (blue 100%, green 0% but reachable by name).
models = serving_host.models
host = serving_host.host

V2_TYPES = {"long": ("INT64", np.int64), "double": ("FP64", np.float64)}


def _auth(slot: str | None = None) -> dict[str, str]:
    """A new dict each call: tritonclient adds its own headers to the dict it is given."""
    headers = {"Authorization": f"Bearer {PRIMARY}"}
    if slot is not None:
        headers["mlgate-deployment"] = slot
    return headers


@pytest.fixture(scope="module")
def client(host: Host) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=host.url.removeprefix("http://")) as opened:
        yield opened


@pytest.fixture(scope="module")
def patients(models: Models) -> pd.DataFrame:
    """Patients on which the two slots' models disagree somewhere, so a prediction tells which one answered."""
    frame, _ = patient_frame(40, 99)
    assert (models.blue.predict(frame) != models.green.predict(frame)).any()
    return frame


def _column_tensors(frame: pd.DataFrame, columns: list[str] = COLUMNS) -> list[triton.InferInput]:
    """One tensor per column, typed as the signature says; JSON data: the host speaks no binary extension."""
    tensors = []
    for name, kind in zip(COLUMNS, TYPES, strict=True):
        if name not in columns:
            continue
        datatype, dtype = V2_TYPES[kind]
        values = frame[name].to_numpy(dtype=dtype)
        tensor = triton.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=False)
        tensors.append(tensor)
    return tensors


def test_health_and_metadata_through_tritonclient(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["extensions"] == []
    assert client.is_model_ready("diabetes", headers=_auth())
    # tritonclient answers False for any non-200: a wrong key or an unknown model is "not ready".
    assert not client.is_model_ready("diabetes", headers={"Authorization": "Bearer not-the-key"})
    assert not client.is_model_ready("nonexistent", headers=_auth())

    metadata = client.get_model_metadata("diabetes", headers=_auth())
    assert metadata["name"] == "diabetes" and metadata["platform"] == "mlflow_sklearn"
    assert metadata["inputs"] == [
        {"name": name, "datatype": V2_TYPES[kind][0], "shape": [-1]} for name, kind in zip(COLUMNS, TYPES, strict=True)
    ]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]


def test_tritonclient_inference_gives_each_slots_own_predictions(
    client: triton.InferenceServerClient, models: Models, patients: pd.DataFrame
) -> None:
    for slot, model, digest in (
        ("blue", models.blue, models.blue_digest),
        ("green", models.green, models.green_digest),
    ):
        result = client.infer(
            "diabetes",
            _column_tensors(patients),
            outputs=[triton.InferRequestedOutput("predictions", binary_data=False)],
            request_id=f"triton-{slot}",
            headers=_auth(slot),
        )
        predictions = result.as_numpy("predictions")
        assert predictions.dtype == np.int64 and predictions.shape == (len(patients),)
        np.testing.assert_array_equal(predictions, model.predict(patients))
        response = result.get_response()
        assert response["id"] == f"triton-{slot}" and response["model_version"] == digest

    # One 2-D FP64 tensor of every column, no output requested: the slot the split picks (blue takes 100%).
    matrix = patients[COLUMNS].to_numpy(dtype=np.float64)
    tensor = triton.InferInput("patients", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix, binary_data=False)
    result = client.infer("diabetes", [tensor], headers=_auth())
    np.testing.assert_array_equal(result.as_numpy("predictions"), models.blue.predict(patients))


def test_tritonclient_sees_the_hosts_errors(client: triton.InferenceServerClient, patients: pd.DataFrame) -> None:
    cases = [
        ({"Authorization": "Bearer not-the-key"}, COLUMNS, "401", "wrong key for endpoint 'diabetes'"),
        ({}, COLUMNS, "401", "missing key"),
        (_auth(), COLUMNS[:-1], "422", "missing column 'Age'"),
    ]
    for headers, columns, status, fragment in cases:
        with pytest.raises(InferenceServerException) as raised:
            client.infer("diabetes", _column_tensors(patients, columns), headers=headers)
        assert raised.value.status() == status, raised.value
        assert fragment in raised.value.message(), raised.value
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nonexistent", headers=_auth())
    assert raised.value.status() == "404" and "nonexistent" in raised.value.message()


def test_tritonclients_binary_tensors_are_refused_as_a_client_error(
    client: triton.InferenceServerClient, patients: pd.DataFrame
) -> None:
    """tritonclient's default, Triton's binary tensor extension, is not part of the protocol; the host lists
    no extension. It must answer 4xx, not fail."""
    values = patients["Age"].to_numpy(dtype=np.int64)
    tensor = triton.InferInput("Age", list(values.shape), "INT64")
    tensor.set_data_from_numpy(values)  # binary_data=True
    with pytest.raises(InferenceServerException) as raised:
        client.infer("diabetes", [tensor], headers=_auth())
    assert raised.value.status() == "400", raised.value


def test_a_listed_version_can_be_requested(
    client: triton.InferenceServerClient, models: Models, patients: pd.DataFrame
) -> None:
    version = models.green_digest
    assert version in client.get_model_metadata("diabetes", headers=_auth())["versions"]
    assert client.is_model_ready("diabetes", model_version=version, headers=_auth())
    result = client.infer("diabetes", _column_tensors(patients), model_version=version, headers=_auth())
    np.testing.assert_array_equal(result.as_numpy("predictions"), models.green.predict(patients))
    assert result.get_response()["model_version"] == version
    with pytest.raises(triton.InferenceServerException) as raised:
        client.infer("diabetes", _column_tensors(patients), model_version="nosuch", headers=_auth())
    assert raised.value.status() == "404" and "nosuch" in str(raised.value)


def test_mlflow_client_side_payloads(host: Host, models: Models, patients: pd.DataFrame) -> None:
    from mlflow.models import Model, convert_input_example_to_serving_input
    from mlflow.models.utils import load_serving_example

    url = f"{host.url}/endpoints/diabetes/invocations"
    headers = {**_auth("green"), "Content-Type": "application/json"}
    expected = models.green.predict(patients).tolist()
    frame = patients[COLUMNS]
    bodies = [
        # pandas' own split JSON (with its index, and without) wrapped by hand, as MLflow's scoring protocol asks
        f'{{"dataframe_split": {frame.to_json(orient="split")}}}',
        f'{{"dataframe_split": {frame.to_json(orient="split", index=False)}}}',
        convert_input_example_to_serving_input(frame),  # MLflow's public helper
    ]
    for body in bodies:
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": expected}

    # The serving example MLflow saved beside the model, sent as is, scores the saved input example.
    example = load_serving_example(str(models.green_dir))
    answer = httpx.post(url, content=example, headers=headers)
    assert answer.status_code == 200, answer.text
    saved = Model.load(models.green_dir).load_input_example(models.green_dir)
    assert answer.json() == {"predictions": models.green.predict(saved).tolist()}
