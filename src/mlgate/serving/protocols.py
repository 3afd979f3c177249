"""The scoring protocols' shapes: MLflow's `/invocations` and the Open Inference Protocol v2 routes and answers.

Payloads become rows in `mlgate.serving.signature` (`rows_from_mlflow`, `rows_from_v2`); scoring itself is
`mlgate.serving.scoring`. Errors take each protocol's own shape (see `mlgate.serving.asgi.send_error`).
"""

from __future__ import annotations

from typing import Any

from mlgate.serving.asgi import Receive, Request, Send, send_json
from mlgate.serving.errors import NotFound
from mlgate.serving.scoring import Scorer
from mlgate.serving.signature import rows_from_mlflow, rows_from_v2, v2_datatype
from mlgate.serving.state import Deployments, Endpoint, Slot

COLUMN_V2_TYPES = {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "boolean": "BOOL"}


class Protocols:
    def __init__(self, *, scorer: Scorer, deployments: Deployments) -> None:
        self._scorer = scorer
        self._deployments = deployments

    async def invocations(self, name: str, request: Request, receive: Receive, send: Send) -> None:
        """`POST /endpoints/<name>/invocations`: MLflow's payloads in, `{"predictions": [...]}` out."""
        _, slot, out = await self._scorer.score(request, receive, name, rows_from_mlflow, json_required=True)
        await send_json(send, request, 200, {"predictions": out.tolist()}, slot.name)

    async def v2(self, path: str, request: Request, receive: Receive, send: Send) -> None:
        """Everything under `/v2`: server metadata, health, model metadata and readiness, inference."""
        parts = path.strip("/").split("/")
        if request.method == "GET" and parts in (["v2"], ["v2", ""]):
            await send_json(send, request, 200, {"name": "mlgate", "version": "2", "extensions": []})
        elif request.method == "GET" and parts[1:] == ["health", "live"]:
            await send_json(send, request, 200, {"live": True})
        elif request.method == "GET" and parts[1:] == ["health", "ready"]:
            ready = self._deployments.ready
            await send_json(send, request, 200 if ready else 503, {"ready": ready})
        elif len(parts) >= 3 and parts[1] == "models":
            rest, version = parts[3:], None
            if len(rest) >= 2 and rest[0] == "versions":
                rest, version = rest[2:], rest[1]
            if rest in ([], ["versions"]) and request.method == "GET":
                endpoint = self._scorer.authorize(request, parts[2])
                only = self._scorer.target(request, endpoint, version) if version is not None else None
                await send_json(send, request, 200, _v2_metadata(endpoint, only))
            elif rest == ["ready"] and request.method == "GET":
                endpoint = self._scorer.authorize(request, parts[2])
                if version is not None:
                    self._scorer.target(request, endpoint, version)
                await send_json(send, request, 200, {"name": parts[2], "ready": True})
            elif rest == ["infer"] and request.method == "POST":
                await self._v2_infer(parts[2], request, receive, send, version)
            else:
                raise NotFound(f"no route {request.method} {path}")
        else:
            raise NotFound(f"no route {request.method} {path}")

    async def _v2_infer(
        self, name: str, request: Request, receive: Receive, send: Send, version: str | None = None
    ) -> None:
        payload, slot, out = await self._scorer.score(
            request, receive, name, rows_from_v2, json_required=False, version=version
        )
        given_id = payload.get("id") if isinstance(payload, dict) else None
        datatype = v2_datatype(out)
        answer = {
            "model_name": name,
            "model_version": slot.runtime.model.digest,
            "id": given_id if isinstance(given_id, str) else request.request_id,
            "outputs": [
                {"name": "predictions", "datatype": datatype, "shape": list(out.shape), "data": out.ravel().tolist()}
            ],
        }
        await send_json(send, request, 200, answer, slot.name)


def _v2_metadata(endpoint: Endpoint, only: Slot | None = None) -> dict[str, Any]:
    model = (only or next(iter(endpoint.slots.values()))).runtime.model
    return {
        "name": endpoint.spec.name,
        "versions": [slot.runtime.model.digest for slot in ([only] if only else endpoint.slots.values())],
        "platform": f"mlflow_{model.flavor}",
        "inputs": [
            {"name": c.name, "datatype": COLUMN_V2_TYPES.get(c.type, "BYTES"), "shape": [-1]}
            for c in model.signature.columns
        ],
        "outputs": [{"name": "predictions", "datatype": model.output_datatype, "shape": [-1]}],
    }
