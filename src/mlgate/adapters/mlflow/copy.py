"""Copying a model version from one environment's MLflow into another's: the bytes of a promotion.

MLflow's `copy_model_version` works inside one registry, and each mlgate environment has a registry,
a tracking server and an artifact root of its own. So the source version's files are downloaded with
the source store's client and uploaded through the target's tracking server as a new logged model
(`create_logged_model`, `log_model_artifacts`, `finalize_logged_model`), which lands them under the
target's own artifact root; that logged model is registered as a new version of the same registered
model name, tagged with its source and its promotion request. Then the target's files are downloaded
again from the target store and digested: only a copy whose digest equals the source's is kept, and
the target registry's alias `candidate` moves to it.

Crash safety: a promotion interrupted half-way is found again by its request tag. A registered
version carrying the tag is adopted (after its digest is verified again) instead of being copied a
second time; a logged model carrying the tag with no version is removed. Whatever a failed copy
created is deleted before the error is raised.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlgate.adapters.mlflow.registry import MODEL_ID_URI, LoggedModel, MlflowRegistry
from mlgate.domain.digest import tree_digest
from mlgate.errors import BackendError, MlgateError, NotFoundError, ValidationError

log = logging.getLogger(__name__)

PROMOTIONS_EXPERIMENT = "mlgate-promotions"  # where the target's copies live as logged models
CANDIDATE_ALIAS = "candidate"
REQUEST_TAG = "mlgate.request_id"
DIGEST_TAG = "mlgate.digest"
SOURCE_TAGS = {
    "environment": "mlgate.source.environment",
    "name": "mlgate.source.name",
    "version": "mlgate.source.version",
    "digest": "mlgate.source.digest",
}
SEARCH_PAGE = 1000
# How MLflow's download error says that files are missing (it wraps the server's 404 in a generic error).
MISSING_SIGNS = ("RESOURCE_DOES_NOT_EXIST", "No such artifact")


@dataclass(frozen=True)
class CopySpec:
    """One promotion's copy: which version, from where, to where, and the digest it must keep."""

    request_id: int
    name: str
    source_env: str
    source_version: int
    source_model_uri: str  # the logged model (models:/m-...) in the source store
    digest: str
    target_env: str

    @property
    def tags(self) -> dict[str, str]:
        return {
            SOURCE_TAGS["environment"]: self.source_env,
            SOURCE_TAGS["name"]: self.name,
            SOURCE_TAGS["version"]: str(self.source_version),
            SOURCE_TAGS["digest"]: self.digest,
            REQUEST_TAG: str(self.request_id),
            DIGEST_TAG: self.digest,
        }

    @property
    def what(self) -> str:
        return f"version {self.source_version} of '{self.name}' in '{self.source_env}'"


@dataclass(frozen=True)
class CopiedVersion:
    """The verified copy in the target registry."""

    environment: str
    name: str
    version: int
    model_uri: str  # its own logged model in the target store
    digest: str
    adopted: bool  # found from an earlier, interrupted attempt rather than copied now
    previous_candidate: int | None  # where alias `candidate` pointed before, to put it back on discard


@dataclass(frozen=True)
class _Found:
    version: int
    model_id: str | None


class PromotionStore(MlflowRegistry):
    """A registry as promotion uses it: upload a logged model, register it, find a request's copies."""

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        with self._calling(f"experiment '{name}'") as client:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            try:
                return str(client.create_experiment(name))
            except MlflowException as exc:  # created by a concurrent promotion meanwhile
                if str(exc.error_code) != "RESOURCE_ALREADY_EXISTS":
                    raise
                return str(client.get_experiment_by_name(name).experiment_id)

    def upload(self, *, experiment_id: str, name: str, folder: Path, tags: dict[str, str]) -> LoggedModel:
        """A new logged model holding the folder's files, READY; removed again if any step fails."""
        from mlflow.entities import LoggedModelStatus

        with self._calling(f"creating a logged model for '{name}'") as client:
            created = client.create_logged_model(experiment_id=experiment_id, name=name, tags=tags)
        model = self._logged(created)
        try:
            with self._calling(f"uploading the files of {model.uri}") as client:
                client.log_model_artifacts(model.model_id, str(folder))
                client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        except BaseException:
            self.quietly(self.remove_logged_model, model)
            raise
        return model

    def register(self, *, name: str, model: LoggedModel, tags: dict[str, str], description: str) -> int:
        """A new version of `name` (the registered model created if missing) from the logged model."""
        from mlflow.exceptions import MlflowException

        with self._calling(f"registering {model.uri} as '{name}'") as client:
            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if str(exc.error_code) != "RESOURCE_ALREADY_EXISTS":
                    raise
            version = client.create_model_version(
                name, source=model.uri, model_id=model.model_id, tags=tags, description=description
            )
        return int(version.version)

    def versions_tagged(self, name: str, key: str, value: str) -> list[_Found]:
        """Versions of `name` with the tag `key`=`value`, oldest first (the filter is applied here:
        tag filters in version searches differ between MLflow's stores)."""
        found: list[_Found] = []
        with self._calling(f"the versions of '{name}'") as client:
            token = None
            while True:
                page = client.search_model_versions(
                    filter_string=f"name='{name}'",  # names are checked against MODEL_NAME: no quotes
                    max_results=SEARCH_PAGE,
                    page_token=token,
                )
                found.extend(_Found(int(v.version), _model_id(v.source)) for v in page if v.tags.get(key) == value)
                token = page.token
                if not token:
                    break
        return sorted(found, key=lambda f: f.version)

    def logged_models_tagged(self, experiment_id: str, key: str, value: str) -> list[LoggedModel]:
        found: list[Any] = []
        with self._calling(f"the logged models tagged {key}={value}") as client:
            token = None
            while True:
                page = client.search_logged_models(
                    experiment_ids=[experiment_id],
                    filter_string=f"tags.`{key}` = '{value}'",  # key and value are ours: no quotes
                    page_token=token,
                )
                found.extend(page)
                token = page.token
                if not token:
                    break
        return [self._logged(m) for m in found]

    def download_version(self, name: str, version: int, destination: Path) -> Path:
        """The files of a registered version, as this store serves them."""
        with self._calling(f"version {version} of '{name}'") as client:
            model_id = _model_id(client.get_model_version(name, str(version)).source)
        if model_id is None:
            raise ValidationError(
                f"version {version} of '{name}' in '{self.env}' has no logged model",
                details={"name": name, "version": version, "environment": self.env},
            )
        return self.download(self.logged_model(f"models:/{model_id}"), destination)

    def candidate(self, name: str) -> int | None:
        """The version alias `candidate` points at, if any."""
        from mlflow.exceptions import MlflowException

        with self._calling(f"alias '{CANDIDATE_ALIAS}' of '{name}'") as client:
            try:
                return int(client.get_model_version_by_alias(name, CANDIDATE_ALIAS).version)
            except MlflowException as exc:
                if str(exc.error_code) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise

    def move_candidate(self, name: str, version: int) -> None:
        with self._calling(f"moving alias '{CANDIDATE_ALIAS}' of '{name}' to version {version}") as client:
            client.set_registered_model_alias(name, CANDIDATE_ALIAS, str(version))

    def remove_version(self, name: str, version: int) -> None:
        """Delete the version, and the registered model too if no version is left."""
        with self._calling(f"deleting version {version} of '{name}'") as client:
            client.delete_model_version(name, str(version))
        self.drop_if_empty(name)

    def drop_if_empty(self, name: str) -> None:
        """Delete the registered model if it has no version: promotion leaves no empty shells."""
        with self._calling(f"deleting the registered model '{name}'") as client:
            if not list(client.search_model_versions(filter_string=f"name='{name}'", max_results=1)):
                client.delete_registered_model(name)

    def remove_logged_model(self, model: LoggedModel) -> None:
        """Delete a logged model and its files (MLflow alone would keep the files until `mlflow gc`)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with self._calling(f"deleting {model.uri}") as client:
            repo: Any = get_artifact_repository(model.artifact_location, tracking_uri=self.upstream)
            repo.delete_artifacts()
            client.delete_logged_model(model.model_id)

    @staticmethod
    def quietly(step: Callable[..., None], *args: Any) -> None:
        """A clean-up step after a failure: its own error goes to the log; the first one is reported."""
        try:
            step(*args)
        except Exception:
            log.exception("clean-up step %s%r failed", getattr(step, "__name__", step), args)


class MlflowVersionCopier:
    """Copies versions between the environments' tracking servers; `upstream(env)` is a server's URL."""

    def __init__(self, upstream: Callable[[str], str]) -> None:
        self._upstream = upstream

    def _store(self, env: str) -> PromotionStore:
        return PromotionStore(self._upstream(env), env=env)

    def promote(self, spec: CopySpec) -> CopiedVersion:
        """The verified copy of `spec`'s version in the target registry: adopted, or made now."""
        target = self._store(spec.target_env)
        with _scratch() as scratch:
            adopted = self._adopt(target, spec, scratch / "found")
            if adopted is not None:
                return adopted
            folder = self._source_files(spec, scratch / "source")
            return self._copy(target, spec, folder, scratch / "check")

    def discard(self, copied: CopiedVersion) -> None:
        """Undo a copy whose record could not be written: the version, its files, the alias move."""
        target = self._store(copied.environment)
        model = target.logged_model(copied.model_uri)
        target.remove_version(copied.name, copied.version)
        target.remove_logged_model(model)
        if copied.previous_candidate is not None:
            target.quietly(target.move_candidate, copied.name, copied.previous_candidate)

    # -- steps ------------------------------------------------------------------------------------

    def _source_files(self, spec: CopySpec, destination: Path) -> Path:
        source = self._store(spec.source_env)
        try:
            folder = source.download(source.logged_model(spec.source_model_uri), destination)
        except MlgateError as exc:
            details = {**exc.details, "model_uri": spec.source_model_uri, "error": exc.message}
            if isinstance(exc, NotFoundError) or any(sign in exc.message for sign in MISSING_SIGNS):
                raise NotFoundError(
                    f"the files of {spec.what} ({spec.source_model_uri}) are missing from the "
                    f"'{spec.source_env}' artifact store",
                    details=details,
                ) from exc
            raise type(exc)(f"the files of {spec.what} cannot be read: {exc.message}", details=details) from exc
        digest = tree_digest(folder)
        if digest != spec.digest:
            raise ValidationError(
                f"the files of {spec.what} have changed since it was registered: their digest is {digest}, "
                f"the approved one {spec.digest}",
                details={"digest": digest, "expected": spec.digest},
            )
        return folder

    def _verified(self, target: PromotionStore, spec: CopySpec, version: int, destination: Path) -> str:
        """The digest of the target version's files, downloaded from the target store."""
        return tree_digest(target.download_version(spec.name, version, destination))

    def _copy(self, target: PromotionStore, spec: CopySpec, folder: Path, check: Path) -> CopiedVersion:
        experiment = target.experiment_id(PROMOTIONS_EXPERIMENT)
        model = target.upload(experiment_id=experiment, name=spec.name, folder=folder, tags=spec.tags)
        try:
            version = target.register(
                name=spec.name,
                model=model,
                tags=spec.tags,
                description=(
                    f"promoted by mlgate from {spec.what} (request {spec.request_id}); "
                    f"content digest sha256:{spec.digest}"
                ),
            )
        except BaseException:
            target.quietly(target.drop_if_empty, spec.name)
            target.quietly(target.remove_logged_model, model)
            raise
        try:
            digest = self._verified(target, spec, version, check)
            if digest != spec.digest:
                raise BackendError(
                    f"the copy of {spec.what} in '{spec.target_env}' has digest {digest}, not the source's "
                    f"{spec.digest}: it was deleted",
                    details={"digest": digest, "expected": spec.digest, "environment": spec.target_env},
                )
            previous = target.candidate(spec.name)
            target.move_candidate(spec.name, version)
        except BaseException:
            target.quietly(target.remove_version, spec.name, version)
            target.quietly(target.remove_logged_model, model)
            raise
        return CopiedVersion(
            environment=spec.target_env,
            name=spec.name,
            version=version,
            model_uri=model.uri,
            digest=digest,
            adopted=False,
            previous_candidate=previous if previous != version else None,
        )

    def _adopt(self, target: PromotionStore, spec: CopySpec, scratch: Path) -> CopiedVersion | None:
        """The copy an interrupted attempt at this request left, verified; its leftovers removed."""
        request = str(spec.request_id)
        experiment = target.experiment_id(PROMOTIONS_EXPERIMENT)
        kept: _Found | None = None
        for found in target.versions_tagged(spec.name, REQUEST_TAG, request):
            if kept is None and self._intact(target, spec, found.version, scratch / str(found.version)):
                kept = found
                continue
            log.warning("removing version %s of '%s' in %s: a broken copy", found.version, spec.name, spec.target_env)
            target.remove_version(spec.name, found.version)
        for model in target.logged_models_tagged(experiment, REQUEST_TAG, request):
            if kept is None or model.model_id != kept.model_id:
                log.warning("removing %s in %s: left by an interrupted promotion", model.uri, spec.target_env)
                target.remove_logged_model(model)
        if kept is None or kept.model_id is None:  # _intact needed the logged model: never None here
            return None
        previous = target.candidate(spec.name)
        target.move_candidate(spec.name, kept.version)
        return CopiedVersion(
            environment=spec.target_env,
            name=spec.name,
            version=kept.version,
            model_uri=f"models:/{kept.model_id}",
            digest=spec.digest,
            adopted=True,
            previous_candidate=previous if previous != kept.version else None,
        )

    def _intact(self, target: PromotionStore, spec: CopySpec, version: int, destination: Path) -> bool:
        try:
            return self._verified(target, spec, version, destination) == spec.digest
        except (NotFoundError, ValidationError):  # files missing or not a model: not worth keeping
            return False


def _model_id(source: str | None) -> str | None:
    """The logged model a version was registered from (`models:/m-...`; REST replies carry no model_id)."""
    match = MODEL_ID_URI.match(source or "")
    return match.group("id") if match else None


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mlgate-promote-") as tmp:
        yield Path(tmp)
