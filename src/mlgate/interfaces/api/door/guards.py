"""The checks the door makes on a write before MLflow sees it, named by the route table's `guard=`.

What mlgate recorded stays as recorded: a recorded version's files, its MLflow version, its registered
model and its run are not changed or deleted through the door, and tags under `mlgate.` (lineage) and
`mlflow.user` (who made a run) are mlgate's to set. A run created through the door is attributed to the
mlgate user, and a job's runs carry the job's lineage. Each guard runs off the event loop (it reads the
control database) and returns the payload to forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlgate.adapters.sql.database import Database
from mlgate.domain.mlflow_operations import Resolved
from mlgate.domain.permissions import Principal
from mlgate.interfaces.api.door.answers import denied, invalid
from mlgate.services.registration import recorded
from mlgate.services.training import jobs

RESERVED_PREFIX = "mlgate."
RESERVED_KEYS = frozenset({"mlflow.user"})
# What a recorded version's deletion goes through instead, so that it is recorded.
DELETE_HINT = "delete it with `mlgate models delete NAME:VERSION --env ENV`, which records the deletion"


@dataclass(frozen=True)
class Write:
    db: Database
    env: str
    principal: Principal
    resolved: Resolved
    payload: dict[str, Any]


def _reserved(key: object) -> bool:
    return isinstance(key, str) and (key.startswith(RESERVED_PREFIX) or key in RESERVED_KEYS)


def _tag_keys(write: Write) -> list[object]:
    payload = write.payload
    keys: list[object] = [payload.get("key"), write.resolved.params.get("tag_key"), write.resolved.params.get("key")]
    tags = payload.get("tags")
    if isinstance(tags, list):
        keys += [t.get("key") for t in tags if isinstance(t, dict)]
    elif isinstance(tags, dict):
        keys += list(tags)
    return keys


def _attributed(write: Write) -> dict[str, Any]:
    """`mlflow.user` in a list of tags names the caller (MLflow's client sends the OS user's name there)."""
    tags = write.payload.get("tags")
    if not isinstance(tags, list):
        return write.payload
    named = [
        {**t, "value": write.principal.name} if isinstance(t, dict) and t.get("key") in RESERVED_KEYS else t
        for t in tags
    ]
    return {**write.payload, "tags": named}


def tags(write: Write) -> dict[str, Any]:
    attributed = _attributed(write)
    keys = _tag_keys(Write(write.db, write.env, write.principal, write.resolved, attributed))
    listed = {t.get("key") for t in attributed.get("tags") or [] if isinstance(t, dict)}
    reserved = sorted({str(k) for k in keys if _reserved(k) and not (k in RESERVED_KEYS and k in listed)})
    if reserved:
        raise invalid(
            f"tags starting with '{RESERVED_PREFIX}', and 'mlflow.user', are set by mlgate only: {', '.join(reserved)}"
        )
    return attributed


def run_create(write: Write) -> dict[str, Any]:
    """The run's author is the mlgate user; a job's runs carry the job's lineage. Reserved tags sent by
    the client are dropped (MLflow's own client sends `mlflow.user`, the OS user's name)."""
    principal = write.principal
    lineage = jobs.lineage_tags(write.db, principal.job_id) if principal.job_id is not None else {}
    ours = {"mlflow.user": principal.name, **lineage}
    sent = write.payload.get("tags")
    kept = [t for t in sent if isinstance(t, dict) and not _reserved(t.get("key"))] if isinstance(sent, list) else []
    return {
        **write.payload,
        "user_id": principal.name,
        "tags": [*kept, *({"key": k, "value": v} for k, v in ours.items())],
    }


def _name_and_version(payload: dict[str, Any]) -> tuple[str, int | None]:
    name, number = payload.get("name"), payload.get("version")
    if not isinstance(name, str) or not name:
        raise invalid("the request names no registered model ('name')")
    try:
        return name, int(number) if number is not None else None
    except (TypeError, ValueError):
        raise invalid(f"version '{number}' is not a version number") from None


def version_delete(write: Write) -> dict[str, Any]:
    name, number = _name_and_version(write.payload)
    if number is not None and recorded.version(write.db, write.env, name, number) is not None:
        raise denied(f"version {number} of '{name}' is recorded by mlgate: {DELETE_HINT}")
    return write.payload


def model_write(write: Write) -> dict[str, Any]:
    """A registered model with recorded versions is neither deleted nor renamed (mlgate's records name it)."""
    name, _ = _name_and_version(write.payload)
    live = recorded.live_versions(write.db, write.env, name)
    if live:
        what = "deleted" if write.resolved.operation.name.endswith("delete") else "renamed"
        raise denied(
            f"'{name}' has {live} version(s) recorded by mlgate, so it is not {what} through MLflow; "
            f"{DELETE_HINT} (version by version)"
        )
    return write.payload


def run_delete(write: Write) -> dict[str, Any]:
    run_id = write.payload.get("run_id")
    if isinstance(run_id, str) and recorded.run(write.db, write.env, run_id):
        raise denied(f"run '{run_id}' produced a version recorded by mlgate; its lineage names the run, which stays")
    return write.payload


def _model_ids_in(path: str) -> list[str]:
    """Logged-model ids in an artifact path: MLflow keeps a logged model's files at `<experiment>/models/<id>/`."""
    segments = path.split("/")
    return [segments[i + 1] for i, s in enumerate(segments[:-1]) if s == "models"]


def artifact_write(write: Write) -> dict[str, Any]:
    paths = [write.resolved.params.get("artifact_path") or "", str(write.payload.get("path") or "")]
    for path in paths:
        for model_id in _model_ids_in(path):
            if recorded.logged_model(write.db, write.env, model_id):
                raise denied(
                    f"'{path}' is a file of logged model {model_id}, which a version recorded by mlgate was "
                    "registered from: its files are what the version's digest vouches for, and stay as they are"
                )
    return write.payload


def logged_model_write(write: Write) -> dict[str, Any]:
    model_id = write.resolved.params.get("model_id", "")
    if recorded.logged_model(write.db, write.env, model_id):
        raise denied(f"logged model {model_id} is the source of a version recorded by mlgate; it stays as it is")
    return write.payload


GUARDS: dict[str, Callable[[Write], dict[str, Any]]] = {
    "tags": tags,
    "run-create": run_create,
    "version-delete": version_delete,
    "model-write": model_write,
    "run-delete": run_delete,
    "artifact-write": artifact_write,
    "logged-model-write": logged_model_write,
}
