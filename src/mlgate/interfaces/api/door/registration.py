"""`model-versions/create` through the door becomes an mlgate registration, so no version exists in the
development registry that mlgate does not know: `mlflow.register_model(...)` and
`MlflowClient().create_model_version(...)` get a version with its digest, signature, lineage and card,
and its gate request per policy, exactly as `mlgate register` would make it. MLflow's client then reads
the version back as it always does.
"""

from __future__ import annotations

from typing import Any

from mlgate.adapters.mlflow.registry import MlflowRegistry
from mlgate.domain.permissions import Principal
from mlgate.errors import MlgateError
from mlgate.interfaces.api.context import AppContext
from mlgate.interfaces.api.door.answers import Refusal, from_error, invalid
from mlgate.services.registration import models, submission

HOW = "register it with `mlgate register --name NAME --model-uri models:/m-...` (or --run RUN_ID --model NAME)"


def _request(payload: dict[str, Any]) -> models.RegisterRequest:
    """MLflow's CreateModelVersion (name, source, run_id, model_id) as mlgate's registration request."""
    name, source = payload.get("name"), payload.get("source")
    model_id, run_id = payload.get("model_id"), payload.get("run_id")
    if not isinstance(name, str) or not name:
        raise invalid("model-versions/create names no registered model ('name')")
    run = run_id if isinstance(run_id, str) and run_id else None
    if isinstance(model_id, str) and model_id:
        return models.RegisterRequest(name=name, run_id=run, model_uri=f"models:/{model_id}")
    if isinstance(source, str) and source.startswith("models:/m-"):
        return models.RegisterRequest(name=name, run_id=run, model_uri=source)
    if isinstance(source, str) and source.startswith("runs:/"):
        run_part, _, artifact = source[len("runs:/") :].partition("/")
        return models.RegisterRequest(name=name, run_id=run_part, model=artifact.strip("/") or "model")
    raise invalid(
        f"mlgate registers logged models only, and this version's source ({str(source)[:200]!r}) names none "
        f"(MLflow 3: `log_model(model, name=...)`, then register its models:/m-... URI); {HOW}"
    )


def register(
    ctx: AppContext, principal: Principal, env: str, upstream: str, payload: dict[str, Any]
) -> tuple[str, int]:
    """Registers the version (blocking: run off the event loop); its (name, version)."""
    request = _request(payload)
    try:
        done = submission.register_and_request(
            ctx.db,
            ctx.settings,
            MlflowRegistry(upstream, env=env),
            actor=principal.name,
            env=env,
            request=request,
            base_url=ctx.base_url,
        )
    except MlgateError as exc:
        refusal = from_error(exc)
        raise Refusal(
            refusal.status, refusal.error_code, f"mlgate could not register this version: {exc.message}; {HOW}"
        ) from exc
    return done.version.name, done.version.version
