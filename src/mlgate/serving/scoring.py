"""The scoring hot path: the endpoint key, the slot, the batched model call, the stable slot's stand-in, the mirror.

The key is checked before the body is read: a caller without one costs the host its headers only.

During a rollout the spec names an endpoint's `stable` slot: a request the traffic split sent to another
slot whose model fails (not an input error) is counted against that slot and answered by the stable one,
so callers never see a canary's failures. A request that names its slot (header or OIP version) is not
retried: it asked for that slot. A request the split sent to either slot of a rollout's pair, answered
there, may be scored by the other one too, after the caller's answer, to compare the two
(`mlgate.serving.shadow`). Every request is counted in the metrics and, at the endpoint's sample rate,
recorded in the request log.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlgate.serving.asgi import SLOT_HEADER, Receive, Request, presents, read_json
from mlgate.serving.errors import AuthError, NotFound, ServingError
from mlgate.serving.metrics import Metrics
from mlgate.serving.recording import RequestLog
from mlgate.serving.shadow import Shadow
from mlgate.serving.signature import to_matrix
from mlgate.serving.state import Deployments, Endpoint, Slot

log = logging.getLogger("mlgate.serving")

# A protocol's payload -> the rows of a model's signature (`mlgate.serving.signature.rows_from_*`).
Parse = Callable[[Any, Any], list[list[Any]]]


class Scorer:
    def __init__(
        self, *, deployments: Deployments, metrics: Metrics, request_log: RequestLog | None, max_body_bytes: int
    ) -> None:
        self._deployments = deployments
        self.metrics = metrics
        self.request_log = request_log
        self.max_body = max_body_bytes
        self._background: set[asyncio.Task[None]] = set()
        self._shadow = Shadow(metrics.shadow)

    def authorize(self, request: Request, name: str) -> Endpoint:
        """The endpoint `name`, if the request presents one of its keys."""
        endpoint = self._deployments.current.endpoints.get(name)
        if endpoint is None:
            raise NotFound(f"no endpoint named '{name}'")
        if request.bearer() is None:
            raise AuthError("missing key: send 'Authorization: Bearer <endpoint key>'")
        if not presents(request, endpoint.spec.key_hashes):
            raise AuthError(f"wrong key for endpoint '{name}'")
        return endpoint

    def target(self, request: Request, endpoint: Endpoint, version: str | None = None) -> Slot:
        """The slot the request names (OIP version or header), else the traffic split's draw."""
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

    async def score(
        self,
        request: Request,
        receive: Receive,
        name: str,
        parse: Parse,
        *,
        json_required: bool,
        version: str | None = None,
    ) -> tuple[Any, Slot, np.ndarray]:
        """Read, check and score one request: (its payload, the slot that answered, the model's output)."""
        started = time.perf_counter()
        endpoint_label, slot_label, status = "unknown", "", 500
        endpoint: Endpoint | None = None
        slot: Slot | None = None
        x: np.ndarray | None = None
        out: np.ndarray | None = None
        answered: np.ndarray | None = None  # the chosen slot's own answer
        try:
            self.authorize(request, name)  # before the body: a caller without a key is not read
            endpoint_label = name
            payload = await read_json(request, receive, max_bytes=self.max_body, json_required=json_required)
            # From here to the increment no await: a spec swap cannot retire the runtime under us. The
            # endpoint and its keys are taken again from the spec in force now.
            endpoint = self.authorize(request, name)
            slot = self.target(request, endpoint, version)
            slot_label = slot.name
            runtime = slot.runtime
            x = to_matrix(parse(payload, runtime.model.signature), runtime.model.signature)
            self._mirror(endpoint, slot, payload, parse)
            chosen = version is None and SLOT_HEADER not in request.headers
            runtime.inflight += 1
            try:
                out = answered = await runtime.batcher.predict(x)
            except Exception as exc:
                stable = self._stable_for(name, slot) if chosen else None
                if stable is None:
                    raise ServingError(f"the model of slot '{slot.name}' failed: {exc}") from exc
                self._count_failure(request, name, slot, stable, exc, started)
                started = time.perf_counter()
                slot = stable
                slot_label = slot.name
                out = await self._predict_on(stable, payload, parse)
            finally:
                runtime.inflight -= 1
            if chosen and answered is not None:  # not when the stable slot stood in for a failure
                self._shadow.after(self._deployments.current.endpoints.get(name), slot.name, payload, parse, answered)
            status = 200
            return payload, slot, out
        except ServingError as exc:
            status = exc.status
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.request(endpoint=endpoint_label, slot=slot_label, status=status, seconds=seconds)
            if self.request_log is not None and slot is not None and endpoint is not None:
                self._record(request, endpoint, slot, status, seconds, x, out)

    def _record(
        self,
        request: Request,
        endpoint: Endpoint,
        slot: Slot,
        status: int,
        seconds: float,
        x: np.ndarray | None,
        out: np.ndarray | None,
    ) -> None:
        """Record the request in the request log, at the endpoint's sample rate, with both its ids."""
        rate = endpoint.spec.sample_rate
        if self.request_log is None or slot.stream is None or (rate < 1.0 and random.random() >= rate):
            return
        self.request_log.record(
            slot.stream, request.request_id, status, seconds * 1000, x, out, request.client_request_id
        )

    def _count_failure(
        self, request: Request, name: str, failed: Slot, stable: Slot, exc: Exception, started: float
    ) -> None:
        """A rollout is under way: the failure counts against the new slot, the caller gets the stable
        slot's answer."""
        log.warning(
            "request %s: slot '%s' failed (%s); answered by '%s'",
            request.request_id,
            failed.name,
            exc,
            stable.name,
        )
        self.metrics.request(endpoint=name, slot=failed.name, status=500, seconds=time.perf_counter() - started)

    def _stable_for(self, name: str, failed: Slot) -> Slot | None:
        """The slot that answers for `failed` while a rollout is under way, from the state in force now
        (the one `failed` was chosen from may have been swapped out meanwhile)."""
        endpoint = self._deployments.current.endpoints.get(name)
        if endpoint is None or endpoint.spec.stable is None or endpoint.spec.stable == failed.name:
            return None
        return endpoint.slots.get(endpoint.spec.stable)

    async def _predict_on(self, slot: Slot, payload: Any, parse: Parse) -> np.ndarray:
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

    def _mirror(self, endpoint: Endpoint, served: Slot, payload: Any, parse: Parse) -> None:
        """Send a share of the traffic to the mirror slot too, in the background; its answer is dropped."""
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
