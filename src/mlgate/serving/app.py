"""The serving host's ASGI app: routing, keys, traffic split, mirroring, request ids and the admin API.

The admin API (`/admin/*`) answers only requests that came in on the host's Unix socket (see
`mlgate.serving.listeners`), and checks the admin token there too.

During a rollout the spec names an endpoint's `stable` slot: a request the traffic split sent to another
slot whose model fails (not an input error) is counted against that slot and answered by the stable one,
so callers never see a canary's failures. A request that names its slot (header or OIP version) is not
retried: it asked for that slot.

Raw ASGI on purpose: the scoring path is a dict lookup, a key check, JSON -> array, one batched
``predict`` and orjson out. The live configuration is one immutable ``_State``; applying a spec builds the
next one (models verified, loaded and warmed up first), swaps the reference, and retires the models no
longer used once their in-flight requests have finished, so a deployment never drops a request.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from mlgate.monitoring.store import RequestLog, Stream, known_request_ids, write_feedback
from mlgate.serving.batching import Batcher
from mlgate.serving.errors import AuthError, InputError, NotFound, ServingError
from mlgate.serving.listeners import on_admin_socket
from mlgate.serving.metrics import Metrics
from mlgate.serving.models import LoadedModel, load_model
from mlgate.serving.signature import rows_from_mlflow, rows_from_v2, to_matrix, v2_datatype
from mlgate.serving.spec import Batching, EndpointSpec, parse_spec

if TYPE_CHECKING:
    from mlgate.serving.workers import WorkerSync

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("mlgate.serving")
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
SPEC_FILE = "spec.json"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SLOT_HEADER = b"mlgate-deployment"
MAX_FEEDBACK = 100_000
COLUMN_V2_TYPES = {"long": "INT64", "integer": "INT32", "double": "FP64", "float": "FP32", "boolean": "BOOL"}


@dataclass
class _Runtime:
    """One loaded model and its batcher, shared by every slot that serves the same folder."""

    model: LoadedModel
    batcher: Batcher
    inflight: int = 0
    names: tuple[str, ...] = ()  # the input columns, as the request log records them

    def __post_init__(self) -> None:
        self.names = tuple(self.model.signature.names)


@dataclass(frozen=True)
class _Slot:
    name: str
    runtime: _Runtime
    stream: Stream | None = None  # where the request log keeps what this slot answers


@dataclass(frozen=True)
class _Endpoint:
    spec: EndpointSpec
    slots: dict[str, _Slot]
    weighted: list[tuple[float, _Slot]]  # (cumulative upper bound in percent, slot)

    def choose(self) -> _Slot:
        draw = random.random() * 100
        for upper, slot in self.weighted:
            if draw < upper:
                return slot
        return self.weighted[-1][1]


@dataclass(frozen=True)
class _State:
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    runtimes: dict[tuple[str, str, str], _Runtime] = field(default_factory=dict)
    raw: Any = None
    sha256: str | None = None  # of the spec's canonical JSON: names it among a host's worker processes


# Request ids: a random prefix per process and a counter, unique across the host's workers and restarts,
# and cheaper than a uuid4 on every request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class _Request:
    __slots__ = ("headers", "method", "path", "request_id")

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: dict[bytes, bytes] = {k.lower(): v for k, v in scope["headers"]}
        given = self.headers.get(b"x-request-id", b"").decode("latin-1")
        self.request_id = given if REQUEST_ID.match(given) else _new_request_id()

    def bearer(self) -> str | None:
        value = self.headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


class ServingHost:
    def __init__(
        self,
        *,
        state_dir: Path,
        admin_token: str,
        batching: Batching | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        sync: WorkerSync | None = None,
        monitoring_dir: Path | None = None,
    ) -> None:
        self.state_dir = state_dir
        # What was scored, for monitoring: queued here, written to Parquet by a background thread.
        self.request_log = RequestLog(monitoring_dir) if monitoring_dir is not None else None
        self._admin_token = admin_token.encode()
        self._default_batching = batching or Batching()
        self._max_body = max_body_bytes
        self._state = _State()
        self._ready = False
        self._apply_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.metrics = Metrics()
        self._sync = sync  # one worker of several (see mlgate.serving.workers); None: the only process
        self._health: dict[str, Any] = {"status": "ok", **(sync.identity() if sync is not None else {})}

    # --- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = _Request(scope)
        path, method = request.path, request.method
        if path.startswith("/endpoints/") and path.endswith("/feedback"):
            name = path[len("/endpoints/") : -len("/feedback")]
            await self._guard(self._feedback, name, request, receive, send, v2=False, allowed=("POST",))
        elif path.startswith("/endpoints/") and path.endswith("/invocations"):
            name = path[len("/endpoints/") : -len("/invocations")]
            await self._guard(self._invocations, name, request, receive, send, v2=False, allowed=("POST",))
        elif path.startswith("/v2"):
            await self._guard(self._v2, path, request, receive, send, v2=True, allowed=("GET", "POST"))
        elif path == "/metrics" and method == "GET":
            body = self.metrics.render() if self._sync is None else self._sync.render_metrics()
            body += self._monitoring_metrics()
            await self._send(send, request, 200, body, b"text/plain; version=0.0.4")
        elif path in ("/ping", "/health") and method == "GET":
            await self._send_json(send, request, 200, self._health)
        elif path == "/admin/spec" and on_admin_socket(scope):  # on the TCP port: an unknown route
            await self._guard(self._admin, path, request, receive, send, v2=False, allowed=("GET", "PUT"))
        elif path == "/admin/stats" and on_admin_socket(scope):
            await self._guard(self._admin_stats, path, request, receive, send, v2=False, allowed=("GET",))
        else:
            await self._send_error(send, request, NotFound(f"no route {method} {path}"), v2=False)

    async def _guard(
        self,
        handler: Callable[[str, _Request, Receive, Send], Awaitable[None]],
        arg: str,
        request: _Request,
        receive: Receive,
        send: Send,
        *,
        v2: bool,
        allowed: tuple[str, ...],
    ) -> None:
        """Run a handler; every error becomes the protocol's error shape, input errors never a 500."""
        if request.method not in allowed:
            error = ServingError(
                f"method {request.method} not allowed on {request.path}", status=405, code="BAD_REQUEST"
            )
            await self._send_error(send, request, error, v2=v2)
            return
        try:
            await handler(arg, request, receive, send)
        except ServingError as exc:
            await self._send_error(send, request, exc, v2=v2)
        except Exception as exc:  # a bug or a model failure: answer, log, keep serving
            log.exception("request %s failed", request.request_id)
            await self._send_error(send, request, ServingError(f"internal error: {exc}"), v2=v2)

    # --- responses ----------------------------------------------------------------------------

    async def _send(
        self, send: Send, request: _Request, status: int, body: bytes, content_type: bytes, slot: str | None = None
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request.request_id.encode()),
        ]
        if slot is not None:
            headers.append((SLOT_HEADER, slot.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _send_json(
        self, send: Send, request: _Request, status: int, payload: Any, slot: str | None = None
    ) -> None:
        await self._send(send, request, status, orjson.dumps(payload), b"application/json", slot)

    async def _send_error(self, send: Send, request: _Request, error: ServingError, *, v2: bool) -> None:
        body = {"error": error.message} if v2 else {"error_code": error.code, "message": error.message}
        await self._send_json(send, request, error.status, body)

    # --- request bodies -------------------------------------------------------------------------

    async def _body(self, request: _Request, receive: Receive, *, json_required: bool) -> Any:
        content_type = request.headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if content_type != "application/json" and (json_required or content_type):
            shown = content_type or "none"
            raise InputError(f"content type must be application/json, got {shown}", status=415, code="BAD_REQUEST")
        length = request.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            raise self._too_large()
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InputError("the client disconnected", status=400, code="BAD_REQUEST")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise self._too_large()
            chunks.append(chunk)
            more = message.get("more_body", False)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the body is not valid JSON: {exc}", status=400, code="MALFORMED_REQUEST") from exc

    def _too_large(self) -> InputError:
        return InputError(f"the body is larger than {self._max_body} bytes", status=413, code="BAD_REQUEST")

    # --- scoring ----------------------------------------------------------------------------------

    def _authorize(self, request: _Request, name: str) -> _Endpoint:
        endpoint = self._state.endpoints.get(name)
        if endpoint is None:
            raise NotFound(f"no endpoint named '{name}'")
        key = request.bearer()
        if key is None:
            raise AuthError("missing key: send 'Authorization: Bearer <endpoint key>'")
        presented = hashlib.sha256(key.encode()).digest()
        matched = False
        for expected in endpoint.spec.key_hashes:  # compare with every hash: time does not tell which
            matched |= hmac.compare_digest(presented, expected)
        if not matched:
            raise AuthError(f"wrong key for endpoint '{name}'")
        return endpoint

    def _target(self, request: _Request, endpoint: _Endpoint, version: str | None = None) -> _Slot:
        if version is not None:  # an Open Inference Protocol model version: a slot's digest, or its name
            for candidate in endpoint.slots.values():
                if version in (candidate.runtime.model.digest, candidate.name):
                    return candidate
            listed = ", ".join(s.runtime.model.digest for s in endpoint.slots.values())
            raise NotFound(f"endpoint '{endpoint.spec.name}' has no version '{version}' (versions: {listed})")
        wanted = request.headers.get(SLOT_HEADER)
        if wanted is None:
            return endpoint.choose()
        slot = endpoint.slots.get(wanted.decode("latin-1"))
        if slot is None:
            raise NotFound(
                f"endpoint '{endpoint.spec.name}' has no slot '{wanted.decode('latin-1')}' "
                f"(slots: {', '.join(endpoint.slots)})"
            )
        return slot

    async def _score(
        self,
        request: _Request,
        receive: Receive,
        name: str,
        parse: Callable[[Any, Any], list[list[Any]]],
        *,
        json_required: bool,
        version: str | None = None,
    ) -> tuple[Any, _Slot, np.ndarray]:
        started = time.perf_counter()
        endpoint_label, slot_label, status = "unknown", "", 500
        endpoint: _Endpoint | None = None
        slot: _Slot | None = None
        x: np.ndarray | None = None
        out: np.ndarray | None = None
        try:
            payload = await self._body(request, receive, json_required=json_required)
            # From here to the increment no await: a spec swap cannot retire the runtime under us.
            endpoint = self._authorize(request, name)
            endpoint_label = name
            slot = self._target(request, endpoint, version)
            slot_label = slot.name
            runtime = slot.runtime
            x = to_matrix(parse(payload, runtime.model.signature), runtime.model.signature)
            self._mirror(endpoint, slot, payload, parse)
            runtime.inflight += 1
            try:
                out = await runtime.batcher.predict(x)
            except Exception as exc:
                chosen = version is None and SLOT_HEADER not in request.headers
                stable = self._stable_for(name, slot) if chosen else None
                if stable is None:
                    raise ServingError(f"the model of slot '{slot.name}' failed: {exc}") from exc
                # A rollout is under way: the failure counts against the new slot, the caller gets the
                # stable slot's answer.
                log.warning(
                    "request %s: slot '%s' failed (%s); answered by '%s'",
                    request.request_id,
                    slot.name,
                    exc,
                    stable.name,
                )
                self.metrics.request(endpoint=name, slot=slot.name, status=500, seconds=time.perf_counter() - started)
                started = time.perf_counter()
                slot = stable
                slot_label = slot.name
                out = await self._predict_on(stable, payload, parse)
            finally:
                runtime.inflight -= 1
            status = 200
            return payload, slot, out
        except ServingError as exc:
            status = exc.status
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request(endpoint=endpoint_label, slot=slot_label, status=status, seconds=seconds)
            request_log = self.request_log
            if (
                request_log is not None
                and slot is not None
                and slot.stream is not None
                and endpoint is not None
                and (endpoint.spec.sample_rate >= 1.0 or random.random() < endpoint.spec.sample_rate)
            ):
                request_log.record(slot.stream, request.request_id, status, seconds * 1000, x, out)

    def _monitoring_metrics(self) -> bytes:
        if self.request_log is None:
            return b""
        stats = self.request_log.stats()
        lines = [
            "# HELP mlgate_serving_monitoring_rows_total Request rows for the monitoring store, by outcome.",
            "# TYPE mlgate_serving_monitoring_rows_total counter",
            f'mlgate_serving_monitoring_rows_total{{outcome="written"}} {stats["written_rows"]}',
            f'mlgate_serving_monitoring_rows_total{{outcome="dropped"}} {stats["dropped_rows"]}',
            "# HELP mlgate_serving_monitoring_pending_rows Rows queued, not yet written.",
            "# TYPE mlgate_serving_monitoring_pending_rows gauge",
            f"mlgate_serving_monitoring_pending_rows {stats['pending_rows']}",
        ]
        return ("\n".join(lines) + "\n").encode()

    async def _feedback(self, name: str, request: _Request, receive: Receive, send: Send) -> None:
        """Ground truth from the caller: `{"feedback": [{"request_id", "label"}, ...]}` (or parallel
        `request_ids` and `labels` lists). Ids this endpoint never recorded are answered back as unknown."""
        payload = await self._body(request, receive, json_required=True)
        self._authorize(request, name)
        if self.request_log is None:
            raise ServingError("this serving host keeps no monitoring store", status=409, code="BAD_REQUEST")
        ids, labels = _feedback_pairs(payload)
        recorded = self.request_log.recorded(ids)
        unseen = [i for i in ids if i not in recorded]
        stored = await asyncio.to_thread(known_request_ids, self.request_log.root, name, unseen) if unseen else set()
        unknown = sorted({i for i in unseen if i not in stored})
        kept = [(i, label) for i, label in zip(ids, labels, strict=True) if i not in unknown]
        if kept:
            await asyncio.to_thread(
                write_feedback,
                self.request_log.root,
                name,
                [i for i, _ in kept],
                [label for _, label in kept],
                source="endpoint",
            )
        await self._send_json(send, request, 200, {"accepted": len(kept), "unknown": unknown})

    def _stable_for(self, name: str, failed: _Slot) -> _Slot | None:
        """The slot that answers for `failed` while a rollout is under way, from the state in force now
        (the one `failed` was chosen from may have been swapped out meanwhile)."""
        endpoint = self._state.endpoints.get(name)
        if endpoint is None or endpoint.spec.stable is None or endpoint.spec.stable == failed.name:
            return None
        return endpoint.slots.get(endpoint.spec.stable)

    async def _predict_on(self, slot: _Slot, payload: Any, parse: Callable[[Any, Any], list[list[Any]]]) -> np.ndarray:
        runtime = slot.runtime
        signature = runtime.model.signature
        x = to_matrix(parse(payload, signature), signature)
        runtime.inflight += 1
        try:
            return await runtime.batcher.predict(x)
        except Exception as exc:
            raise ServingError(f"the model of slot '{slot.name}' failed: {exc}") from exc
        finally:
            runtime.inflight -= 1

    def _mirror(
        self, endpoint: _Endpoint, served: _Slot, payload: Any, parse: Callable[[Any, Any], list[list[Any]]]
    ) -> None:
        spec = endpoint.spec
        if spec.mirror_slot is None or spec.mirror_slot == served.name or random.random() * 100 >= spec.mirror_percent:
            return
        slot = endpoint.slots[spec.mirror_slot]
        runtime = slot.runtime
        runtime.inflight += 1

        async def shadow() -> None:
            started, status = time.perf_counter(), 200
            try:
                signature = runtime.model.signature
                await runtime.batcher.predict(to_matrix(parse(payload, signature), signature))
            except ServingError as exc:
                status = exc.status
            except Exception:  # the mirror's failures never reach the caller
                status = 500
            finally:
                runtime.inflight -= 1
                self.metrics.request(
                    endpoint=spec.name,
                    slot=slot.name,
                    status=status,
                    seconds=time.perf_counter() - started,
                    mirror=True,
                )

        task = asyncio.get_running_loop().create_task(shadow())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _invocations(self, name: str, request: _Request, receive: Receive, send: Send) -> None:
        _, slot, out = await self._score(request, receive, name, rows_from_mlflow, json_required=True)
        await self._send_json(send, request, 200, {"predictions": out.tolist()}, slot.name)

    async def _v2(self, path: str, request: _Request, receive: Receive, send: Send) -> None:
        parts = path.strip("/").split("/")
        if request.method == "GET" and parts in (["v2"], ["v2", ""]):
            await self._send_json(send, request, 200, {"name": "mlgate", "version": "2", "extensions": []})
        elif request.method == "GET" and parts[1:] == ["health", "live"]:
            await self._send_json(send, request, 200, {"live": True})
        elif request.method == "GET" and parts[1:] == ["health", "ready"]:
            await self._send_json(send, request, 200 if self._ready else 503, {"ready": self._ready})
        elif len(parts) >= 3 and parts[1] == "models":
            rest, version = parts[3:], None
            if len(rest) >= 2 and rest[0] == "versions":
                rest, version = rest[2:], rest[1]
            if rest in ([], ["versions"]) and request.method == "GET":
                endpoint = self._authorize(request, parts[2])
                only = self._target(request, endpoint, version) if version is not None else None
                await self._send_json(send, request, 200, self._v2_metadata(endpoint, only))
            elif rest == ["ready"] and request.method == "GET":
                endpoint = self._authorize(request, parts[2])
                if version is not None:
                    self._target(request, endpoint, version)
                await self._send_json(send, request, 200, {"name": parts[2], "ready": True})
            elif rest == ["infer"] and request.method == "POST":
                await self._v2_infer(parts[2], request, receive, send, version)
            else:
                raise NotFound(f"no route {request.method} {path}")
        else:
            raise NotFound(f"no route {request.method} {path}")

    def _v2_metadata(self, endpoint: _Endpoint, only: _Slot | None = None) -> dict[str, Any]:
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

    async def _v2_infer(
        self, name: str, request: _Request, receive: Receive, send: Send, version: str | None = None
    ) -> None:
        payload, slot, out = await self._score(
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
        await self._send_json(send, request, 200, answer, slot.name)

    # --- admin: the pushed spec ---------------------------------------------------------------

    def _check_admin(self, request: _Request) -> None:
        token = request.bearer()
        if token is None or not hmac.compare_digest(token.encode(), self._admin_token):
            raise AuthError("missing or wrong admin token")

    async def _admin_stats(self, _: str, request: _Request, receive: Receive, send: Send) -> None:
        """Cumulative per-slot counters (see `Metrics.stats`); with several workers, the host's total."""
        self._check_admin(request)
        metrics = self.metrics if self._sync is None else self._sync.host_metrics()
        await self._send_json(send, request, 200, metrics.stats())

    async def _admin(self, _: str, request: _Request, receive: Receive, send: Send) -> None:
        self._check_admin(request)
        if request.method == "GET":
            await self._send_json(send, request, 200, {"spec": self._state.raw, "ready": self._ready})
            return
        raw = await self._body(request, receive, json_required=True)
        started = time.monotonic()
        sha256 = await self.apply(raw)
        if self._sync is not None:  # answer once every worker process serves the new spec
            await self._sync.settle(sha256, apply_seconds=time.monotonic() - started)
        await self._send_json(send, request, 200, self._summary())

    def _summary(self) -> dict[str, Any]:
        return {
            "ready": self._ready,
            "endpoints": {
                name: {
                    slot.name: {"digest": slot.runtime.model.digest, "flavor": slot.runtime.model.flavor, "ready": True}
                    for slot in endpoint.slots.values()
                }
                for name, endpoint in self._state.endpoints.items()
            },
        }

    @property
    def spec_sha256(self) -> str | None:
        """The sha256 of the canonical JSON of the spec in force; None before the first one."""
        return self._state.sha256

    async def apply(self, raw: Any, *, persist: bool = True) -> str:
        """Verify, load and warm up every new model, then swap the live state in one step.

        Returns the sha256 of the spec's canonical JSON (the bytes saved to ``spec.json``).
        """
        spec = parse_spec(raw)
        canonical = orjson.dumps(raw)
        sha256 = hashlib.sha256(canonical).hexdigest()
        batching = spec.batching or self._default_batching
        async with self._apply_lock:
            old = self._state
            loaded: dict[tuple[str, str, str], LoadedModel] = {}
            for endpoint in spec.endpoints.values():
                for slot in endpoint.slots.values():
                    key = _runtime_key(slot.model_dir, slot.digest, slot.signature, batching)
                    if key in old.runtimes or key in loaded:
                        continue
                    loaded[key] = await asyncio.to_thread(
                        load_model, model_dir=slot.model_dir, digest=slot.digest, signature=slot.signature
                    )
            runtimes: dict[tuple[str, str, str], _Runtime] = {}
            for key, model in loaded.items():
                batcher = Batcher(
                    model.predict,
                    max_batch_size=batching.max_batch_size,
                    max_wait_ms=batching.max_wait_ms,
                    on_batch=self.metrics.batch_sizes.observe,
                )
                batcher.start()
                runtimes[key] = _Runtime(model, batcher)
                self.metrics.load_seconds[model.digest] = model.load_seconds
            endpoints = {}
            for endpoint in spec.endpoints.values():
                slots = {}
                for slot in endpoint.slots.values():
                    key = _runtime_key(slot.model_dir, slot.digest, slot.signature, batching)
                    runtime = runtimes.get(key) or old.runtimes[key]
                    runtimes[key] = runtime
                    stream = None
                    if self.request_log is not None:
                        stream = self.request_log.stream(
                            endpoint.name, slot.name, runtime.model.digest, slot.version, runtime.names
                        )
                    slots[slot.name] = _Slot(slot.name, runtime, stream)
                weighted, upper = [], 0.0
                for slot in endpoint.slots.values():
                    if slot.traffic > 0:
                        upper += slot.traffic
                        weighted.append((upper, slots[slot.name]))
                endpoints[endpoint.name] = _Endpoint(endpoint, slots, weighted)
            self._state = _State(endpoints, runtimes, raw, sha256)
            self._ready = True
            # The loaded models are long-lived: keep them out of the collector's scans. Unfreezing first lets
            # models retired by earlier specs be collected.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            retired = [rt for key, rt in old.runtimes.items() if key not in runtimes]
            if persist:
                self._save(canonical)
        for runtime in retired:
            task = asyncio.get_running_loop().create_task(_retire(runtime))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return sha256

    def _save(self, canonical: bytes) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / SPEC_FILE
        tmp = path.with_name(f"{SPEC_FILE}.{os.getpid()}.tmp")  # per process: workers may save at once
        tmp.write_bytes(canonical)
        os.replace(tmp, path)

    async def restore(self) -> None:
        """Apply the last spec this host applied, so a restarted host serves what it served before."""
        path = self.state_dir / SPEC_FILE
        if not path.is_file():
            return
        try:
            await self.apply(json.loads(path.read_text()), persist=False)
            log.info("restored the deployment spec from %s", path)
        except (ServingError, ValueError) as exc:
            message = exc.message if isinstance(exc, ServingError) else str(exc)
            log.error("could not restore the saved spec %s: %s", path, message)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.request_log is not None:
                    self.request_log.start()
                if self._sync is None:
                    await self.restore()
                else:  # restores the saved spec too, then follows the one the other workers save
                    await self._sync.start(self)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sync is not None:
                    await self._sync.stop()
                for runtime in self._state.runtimes.values():
                    await runtime.batcher.close()
                if self.request_log is not None:
                    await asyncio.to_thread(self.request_log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _feedback_pairs(payload: Any) -> tuple[list[str], list[float]]:
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


def _runtime_key(model_dir: str, digest: str, signature: Any, batching: Batching) -> tuple[str, str, str]:
    extra = json.dumps([signature, batching.max_batch_size, batching.max_wait_ms], sort_keys=True)
    return (model_dir, digest, extra)


async def _retire(runtime: _Runtime) -> None:
    """Stop a model's batcher once the requests already routed to it have been answered."""
    while runtime.inflight > 0:
        await asyncio.sleep(0.01)
    await runtime.batcher.close()
