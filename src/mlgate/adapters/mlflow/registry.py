"""An environment's MLflow, as registration needs it: runs, logged models, their files, registry versions.

The server talks to the environment's tracking server directly (`upstream`, no mlgate door), with
explicit clients, never MLflow's process-wide tracking URI: requests for several environments run
side by side in one process. MLflow errors become `mlgate.errors` here. Nothing here loads a model:
its files are downloaded and read as data (`read_model_folder`); predictions come from the sandbox
(`services.registration.scoring`, `checks.score_rows`).

MLflow 3 keeps a model logged with `log_model(name=...)` as a *logged model* (`models:/m-...`) linked
to its source run, not among the run's artifacts: it is found by source run and name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlgate import yaml_text
from mlgate.adapters.mlflow import unix_transport
from mlgate.domain.model_files import check_references, check_symlinks
from mlgate.errors import BackendError, ConflictError, MlgateError, NotFoundError, ValidationError

MODEL_ID_URI = re.compile(r"^models:/(?P<id>m-[0-9a-f]{8,64})$")
MLMODEL = "MLmodel"
MAX_INPUT_EXAMPLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    name: str | None
    status: str
    deleted: bool
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    name: str
    source_run_id: str | None
    experiment_id: str
    artifact_location: str
    status: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model_id}"


@dataclass(frozen=True)
class ModelFolder:
    """What a downloaded MLflow model folder says about itself (its MLmodel file)."""

    signature: dict[str, Any] | None
    input_example: Any
    input_example_note: str | None
    flavors: list[str]
    mlflow_version: str | None


def _translate(exc: Exception, *, what: str, env: str) -> MlgateError:
    """An MLflow error as the mlgate error that says what went wrong with `what`."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        code = str(exc.error_code)
        if code == "RESOURCE_DOES_NOT_EXIST":
            return NotFoundError(f"{what} does not exist in '{env}'", details={"environment": env})
        if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE"):
            return ValidationError(f"{what}: {exc.message}", details={"environment": env})
        if code == "RESOURCE_ALREADY_EXISTS":
            return ConflictError(f"{what}: {exc.message}", details={"environment": env})
    return BackendError(f"the MLflow tracking server of '{env}' failed on {what}: {exc}", details={"environment": env})


class MlflowRegistry:
    """One environment's tracking server and model registry, reached at `upstream`."""

    def __init__(self, upstream: str, *, env: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.env = env
        unix_transport.install()  # MLflow's client reaches the tracking servers over their sockets

    @contextmanager
    def _calling(self, what: str) -> Iterator[Any]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.upstream, registry_uri=self.upstream)
        try:
            yield client
        except MlgateError:
            raise
        except Exception as exc:
            raise _translate(exc, what=what, env=self.env) from exc

    # -- runs and logged models -------------------------------------------------------------------

    def run(self, run_id: str) -> RunRecord:
        with self._calling(f"run '{run_id}'") as client:
            run = client.get_run(run_id)
        return RunRecord(
            run_id=run.info.run_id,
            experiment_id=str(run.info.experiment_id),
            name=run.info.run_name,
            status=str(run.info.status),
            deleted=run.info.lifecycle_stage == "deleted",
            params=dict(run.data.params),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            tags=dict(run.data.tags),
        )

    @staticmethod
    def _logged(model: Any) -> LoggedModel:
        return LoggedModel(
            model_id=model.model_id,
            name=model.name,
            source_run_id=model.source_run_id,
            experiment_id=str(model.experiment_id),
            artifact_location=model.artifact_location,
            status=str(model.status),
        )

    def logged_models_of(self, run: RunRecord) -> list[LoggedModel]:
        """The models the run logged (MLflow 3 logged models whose source is the run), newest first."""
        found: list[Any] = []
        with self._calling(f"the logged models of run '{run.run_id}'") as client:
            token = None
            while True:
                page = client.search_logged_models(
                    experiment_ids=[run.experiment_id],
                    filter_string=f"source_run_id='{run.run_id}'",  # run ids are checked to be plain
                    page_token=token,
                )
                found.extend(page)
                token = page.token
                if not token:
                    break
        found.sort(key=lambda m: m.creation_timestamp or 0, reverse=True)
        return [self._logged(m) for m in found]

    def logged_model(self, model_uri: str) -> LoggedModel:
        match = MODEL_ID_URI.match(model_uri)
        if match is None:
            raise ValidationError(
                f"expected a logged model URI like models:/m-<id>, got '{model_uri}'",
                details={"model_uri": model_uri},
            )
        with self._calling(f"logged model '{model_uri}'") as client:
            return self._logged(client.get_logged_model(match.group("id")))

    def download(self, model: LoggedModel, destination: Path) -> Path:
        """The logged model's files, under destination; returns the model folder.

        `mlflow.artifacts.download_artifacts` resolves a `models:/` URI against the process-wide
        tracking URI whatever `tracking_uri` says; the logged model's own artifact location
        (`mlflow-artifacts:/...`) is resolved against the `tracking_uri` given, so that is what we use.
        """
        from mlflow.artifacts import download_artifacts

        with self._calling(f"downloading the files of {model.uri}"):
            path = download_artifacts(
                artifact_uri=model.artifact_location,
                dst_path=str(destination),
                tracking_uri=self.upstream,
            )
        folder = Path(path)
        if not (folder / MLMODEL).is_file():
            raise ValidationError(
                f"{model.uri} has no {MLMODEL} file: it is not an MLflow model",
                details={"model_uri": model.uri},
            )
        return folder

    # -- the registry ------------------------------------------------------------------------------

    def create_version(
        self, *, name: str, model: LoggedModel, run_id: str | None, tags: dict[str, str], description: str
    ) -> tuple[int, bool]:
        """A new version of the registered model `name` (created if missing); (version, model created)."""
        from mlflow.exceptions import MlflowException

        with self._calling(f"registering {model.uri} as '{name}'") as client:
            created = False
            try:
                client.get_registered_model(name)
            except MlflowException as exc:
                if str(exc.error_code) != "RESOURCE_DOES_NOT_EXIST":
                    raise
                client.create_registered_model(name)
                created = True
            try:
                version = client.create_model_version(
                    name,
                    source=model.uri,
                    run_id=run_id,
                    model_id=model.model_id,
                    tags=tags,
                    description=description,
                )
            except Exception:
                if created:
                    client.delete_registered_model(name)
                raise
        return int(version.version), created

    def delete_version(self, *, name: str, version: int, drop_model: bool) -> None:
        """Undo `create_version`: the version, and the registered model if that call created it."""
        with self._calling(f"deleting version {version} of '{name}'") as client:
            client.delete_model_version(name, str(version))
            if drop_model:
                client.delete_registered_model(name)


# -- the downloaded model folder: read without importing MLflow ---------------------------------------


def _schema(text: Any) -> list[dict[str, Any]] | None:
    if text is None:
        return None
    parsed = json.loads(text) if isinstance(text, str) else text
    return parsed if isinstance(parsed, list) else None


def read_model_folder(folder: Path) -> ModelFolder:
    """The signature (inputs, outputs, params as lists of column or tensor specs) and input example;
    ValidationError when a symlink or a path MLmodel names leaves the folder."""
    check_symlinks(folder)
    try:
        mlmodel = yaml_text.load((folder / MLMODEL).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError(f"the model's {MLMODEL} file cannot be read: {exc}") from exc
    check_references(folder, mlmodel)
    raw = mlmodel.get("signature")
    signature = None
    if isinstance(raw, dict) and raw.get("inputs"):
        try:
            signature = {key: _schema(raw.get(key)) for key in ("inputs", "outputs", "params")}
        except ValueError as exc:
            raise ValidationError(f"the model's signature is not valid JSON: {exc}") from exc
    example, note = None, None
    info = mlmodel.get("saved_input_example_info")
    if isinstance(info, dict) and info.get("artifact_path"):
        path = folder / str(info["artifact_path"])
        if not path.is_file():
            note = f"the input example file {info['artifact_path']} is missing from the model"
        elif path.stat().st_size > MAX_INPUT_EXAMPLE_BYTES:
            note = f"the input example is over {MAX_INPUT_EXAMPLE_BYTES // 1024} KiB; it is kept only in the model"
        else:
            try:
                example = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                note = f"the input example {info['artifact_path']} is not JSON; it is kept only in the model"
    else:
        note = "the model was logged without an input example"
    flavors = mlmodel.get("flavors")
    return ModelFolder(
        signature=signature,
        input_example=example,
        input_example_note=note,
        flavors=sorted(flavors) if isinstance(flavors, dict) else [],
        mlflow_version=mlmodel.get("mlflow_version"),
    )
