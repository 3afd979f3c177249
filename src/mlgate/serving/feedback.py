"""Ground truth sent to the host: `POST /endpoints/<name>/feedback`, its two payload shapes, the labels stored.

Only ids the host issued for this endpoint and recorded are kept: those the request log holds in memory
for it, else those the endpoint's request parts in the monitoring store name (looked up off the event
loop). The host issues every request id itself (`mlgate.serving.asgi`), so a caller cannot label a request
by an id it chose, nor another endpoint's requests; the others are answered back as unknown.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlgate.adapters.monitoring.store import known_request_ids, write_feedback
from mlgate.serving.asgi import REQUEST_ID, Receive, Request, Send, read_json, send_json
from mlgate.serving.errors import InputError, ServingError
from mlgate.serving.recording import RequestLog
from mlgate.serving.scoring import Scorer

MAX_FEEDBACK = 100_000


class Feedback:
    def __init__(self, *, scorer: Scorer, request_log: RequestLog | None, max_body_bytes: int) -> None:
        self._scorer = scorer  # for the endpoint's key check
        self._request_log = request_log
        self._max_body = max_body_bytes

    async def __call__(self, name: str, request: Request, receive: Receive, send: Send) -> None:
        """Ground truth from the caller: `{"feedback": [{"request_id", "label"}, ...]}` (or parallel
        `request_ids` and `labels` lists). Ids the host did not issue and record for this endpoint are
        answered back as unknown."""
        self._scorer.authorize(request, name)  # before the body
        request_log = self._request_log
        if request_log is None:
            raise ServingError("this serving host keeps no monitoring store", status=409, code="BAD_REQUEST")
        payload = await read_json(request, receive, max_bytes=self._max_body, json_required=True)
        ids, labels = feedback_pairs(payload)
        recorded = request_log.recorded(name, ids)
        unseen = [i for i in ids if i not in recorded]
        stored = await asyncio.to_thread(known_request_ids, request_log.root, name, unseen) if unseen else set()
        unknown = sorted({i for i in unseen if i not in stored})
        kept = [(i, label) for i, label in zip(ids, labels, strict=True) if i not in unknown]
        if kept:
            await asyncio.to_thread(
                write_feedback,
                request_log.root,
                name,
                [i for i, _ in kept],
                [label for _, label in kept],
                source="endpoint",
            )
        await send_json(send, request, 200, {"accepted": len(kept), "unknown": unknown})


def feedback_pairs(payload: Any) -> tuple[list[str], list[float]]:
    """The (request ids, labels) of a feedback payload, checked."""
    ids: list[Any]
    labels: Any
    if isinstance(payload, dict) and isinstance(payload.get("feedback"), list):
        items = payload["feedback"]
        if not all(isinstance(item, dict) for item in items):
            raise InputError("each item of 'feedback' must be an object with 'request_id' and 'label'")
        ids, labels = [item.get("request_id") for item in items], [item.get("label") for item in items]
    elif isinstance(payload, dict) and isinstance(payload.get("request_ids"), list):
        ids, labels = payload["request_ids"], payload.get("labels")
        if not isinstance(labels, list) or len(labels) != len(ids):
            raise InputError("'labels' must be a list as long as 'request_ids'")
    else:
        raise InputError("send {'feedback': [{'request_id': ..., 'label': ...}, ...]}")
    if not ids:
        raise InputError("no feedback given")
    if len(ids) > MAX_FEEDBACK:
        raise InputError(f"at most {MAX_FEEDBACK} labels per request, got {len(ids)}", status=413)
    for position, (request_id, label) in enumerate(zip(ids, labels, strict=True)):
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            raise InputError(f"item {position}: 'request_id' must be a request id string, got {request_id!r}")
        if isinstance(label, bool) or not isinstance(label, int | float):
            raise InputError(f"item {position}: 'label' must be a number, got {label!r}")
    return list(ids), [float(label) for label in labels]
