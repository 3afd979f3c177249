"""The host's live deployments: endpoints, slots and the models loaded behind them; the spec applied and saved.

The live configuration is one immutable `State`; applying a spec builds the next one (models verified,
loaded and warmed up first), swaps the reference, and retires the models no longer used once their
in-flight requests have finished, so a deployment never drops a request.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mlgate.serving.batching import Batcher
from mlgate.serving.errors import ServingError
from mlgate.serving.metrics import Metrics
from mlgate.serving.models import LoadedModel, load_model
from mlgate.serving.recording import RequestLog, Stream
from mlgate.serving.spec import Batching, EndpointSpec, Spec, parse_spec

log = logging.getLogger("mlgate.serving")
SPEC_FILE = "spec.json"

RuntimeKey = tuple[str, str, str]  # (model folder, digest, signature and batching as JSON)


@dataclass
class Runtime:
    """One loaded model and its batcher, shared by every slot that serves the same folder."""

    model: LoadedModel
    batcher: Batcher
    inflight: int = 0
    names: tuple[str, ...] = ()  # the input columns, as the request log records them

    def __post_init__(self) -> None:
        self.names = tuple(self.model.signature.names)


@dataclass(frozen=True)
class Slot:
    name: str
    runtime: Runtime
    stream: Stream | None = None  # where the request log keeps what this slot answers


@dataclass(frozen=True)
class Endpoint:
    spec: EndpointSpec
    slots: dict[str, Slot]
    weighted: list[tuple[float, Slot]]  # (cumulative upper bound in percent, slot)

    def choose(self) -> Slot:
        draw = random.random() * 100
        for upper, slot in self.weighted:
            if draw < upper:
                return slot
        return self.weighted[-1][1]


@dataclass(frozen=True)
class State:
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    runtimes: dict[RuntimeKey, Runtime] = field(default_factory=dict)
    raw: Any = None
    sha256: str | None = None  # of the spec's canonical JSON: names it among a host's worker processes
    metrics_token_hashes: tuple[bytes, ...] = ()  # who may read /metrics


class Deployments:
    """The state in force (`current`, read on every request) and the one way to change it (`apply`)."""

    def __init__(
        self, *, state_dir: Path, batching: Batching, metrics: Metrics, request_log: RequestLog | None
    ) -> None:
        self.state_dir = state_dir
        self.current = State()
        self.ready = False  # once a spec is in force
        self._default_batching = batching
        self._metrics = metrics
        self._request_log = request_log
        self._apply_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def spec_sha256(self) -> str | None:
        """The sha256 of the canonical JSON of the spec in force; None before the first one."""
        return self.current.sha256

    async def apply(self, raw: Any, *, persist: bool = True) -> str:
        """Verify, load and warm up every new model, then swap the live state in one step.

        Returns the sha256 of the spec's canonical JSON (the bytes saved to ``spec.json``).
        """
        spec = parse_spec(raw)
        canonical = orjson.dumps(raw)
        sha256 = hashlib.sha256(canonical).hexdigest()
        batching = spec.batching or self._default_batching
        async with self._apply_lock:
            old = self.current
            runtimes = await self._load(spec, batching, old)
            endpoints = self._endpoints(spec, batching, runtimes, old)
            self.current = State(endpoints, runtimes, raw, sha256, spec.metrics_token_hashes)
            self.ready = True
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

    async def _load(self, spec: Spec, batching: Batching, old: State) -> dict[RuntimeKey, Runtime]:
        """The models `old` does not serve yet, each loaded once (all of them before any batcher starts)."""
        loaded: dict[RuntimeKey, LoadedModel] = {}
        for endpoint in spec.endpoints.values():
            for slot in endpoint.slots.values():
                key = _runtime_key(slot.model_dir, slot.digest, slot.signature, batching)
                if key in old.runtimes or key in loaded:
                    continue
                loaded[key] = await asyncio.to_thread(
                    load_model, model_dir=slot.model_dir, digest=slot.digest, signature=slot.signature
                )
        runtimes: dict[RuntimeKey, Runtime] = {}
        for key, model in loaded.items():
            batcher = Batcher(
                model.predict,
                max_batch_size=batching.max_batch_size,
                max_wait_ms=batching.max_wait_ms,
                on_batch=self._metrics.batch_sizes.observe,
            )
            batcher.start()
            runtimes[key] = Runtime(model, batcher)
            self._metrics.model_loads.observe(model.load_seconds)
        return runtimes

    def _endpoints(
        self, spec: Spec, batching: Batching, runtimes: dict[RuntimeKey, Runtime], old: State
    ) -> dict[str, Endpoint]:
        """The spec's endpoints over the new runtimes and the kept ones (added to `runtimes`)."""
        endpoints = {}
        for endpoint in spec.endpoints.values():
            slots = {}
            for slot in endpoint.slots.values():
                key = _runtime_key(slot.model_dir, slot.digest, slot.signature, batching)
                runtime = runtimes.get(key) or old.runtimes[key]
                runtimes[key] = runtime
                stream = None
                if self._request_log is not None:
                    stream = self._request_log.stream(
                        endpoint.name, slot.name, runtime.model.digest, slot.version, runtime.names
                    )
                slots[slot.name] = Slot(slot.name, runtime, stream)
            weighted, upper = [], 0.0
            for slot in endpoint.slots.values():
                if slot.traffic > 0:
                    upper += slot.traffic
                    weighted.append((upper, slots[slot.name]))
            endpoints[endpoint.name] = Endpoint(endpoint, slots, weighted)
        return endpoints

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

    async def close(self) -> None:
        """Stop every model's batcher (the host is shutting down)."""
        for runtime in self.current.runtimes.values():
            await runtime.batcher.close()


def _runtime_key(model_dir: str, digest: str, signature: Any, batching: Batching) -> RuntimeKey:
    extra = json.dumps([signature, batching.max_batch_size, batching.max_wait_ms], sort_keys=True)
    return (model_dir, digest, extra)


async def _retire(runtime: Runtime) -> None:
    """Stop a model's batcher once the requests already routed to it have been answered."""
    while runtime.inflight > 0:
        await asyncio.sleep(0.01)
    await runtime.batcher.close()
