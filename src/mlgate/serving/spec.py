"""The deployment spec the control plane pushes: endpoints, their key hashes, slots, traffic and mirror.

{"endpoints": {"diabetes": {
    "key_hashes": ["<sha256 hex of the primary key>", "<... secondary key>"],
    "slots": {"blue": {"model_dir": ".../serving/<digest>", "digest": "<digest>", "traffic": 90,
                       "signature": {"inputs": "[...]"}},          # optional: MLmodel's otherwise
              "green": {"model_dir": "...", "digest": "...", "traffic": 10}},
    "mirror": {"slot": "green", "percent": 10},                    # optional, percent <= 50
    "stable": "blue",                                              # optional: during a rollout, the slot
                                                                   # that answers when another slot's model fails
    "shadow": {"slot": "green", "percent": 20, "tolerance": 0.01,  # optional, with "stable": the rollout's new
               "edges": [0.1, 0.5, 0.9]}}},                        # slot, compared with the stable one on a
                                                                   # share of their requests (mlgate.serving.shadow);
                                                                   # edges (optional): bins of the predictions
 "batching": {"max_batch_size": 64, "max_wait_ms": 0.0},          # optional
 "metrics_token_hashes": ["<sha256 hex of the metrics token>"]}     # optional: without one, /metrics
                                                                   # answers no one
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mlgate.serving.errors import InputError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_MIRROR_PERCENT = 50
MAX_SHADOW_EDGES = 256


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 64
    max_wait_ms: float = 0.0


@dataclass(frozen=True)
class SlotSpec:
    name: str
    model_dir: str
    digest: str
    traffic: int
    signature: Any | None
    version: int | None = None  # the registry's version number, recorded with each request


@dataclass(frozen=True)
class ShadowSpec:
    slot: str  # the rollout's new slot, compared with the endpoint's stable one
    percent: float
    tolerance: float
    edges: tuple[float, ...] | None = None


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    key_hashes: tuple[bytes, ...]
    slots: dict[str, SlotSpec]
    mirror_slot: str | None
    mirror_percent: float
    stable: str | None = None
    sample_rate: float = 1.0  # the share of requests recorded in the monitoring store
    shadow: ShadowSpec | None = None


@dataclass(frozen=True)
class Spec:
    endpoints: dict[str, EndpointSpec]
    batching: Batching | None
    metrics_token_hashes: tuple[bytes, ...] = ()


def _invalid(message: str) -> InputError:
    return InputError(f"invalid spec: {message}", status=422)


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(f"{where} must be a number from {low:g} to {high:g}")
    return float(value)


def _slot(endpoint: str, name: str, raw: Any) -> SlotSpec:
    where = f"endpoints.{endpoint}.slots.{name}"
    if not NAME.match(name) or not isinstance(raw, dict):
        raise _invalid(f"{where} must be a named object")
    for key in ("model_dir", "digest"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _invalid(f"{where}.{key} is required")
    traffic = _number(raw.get("traffic", 0), f"{where}.traffic", 0, 100)
    if traffic != int(traffic):
        raise _invalid(f"{where}.traffic must be a whole number")
    version = raw.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise _invalid(f"{where}.version must be a whole number")
    return SlotSpec(name, raw["model_dir"], raw["digest"], int(traffic), raw.get("signature"), version)


def _hashes(raw: Any, where: str, *, required: bool) -> tuple[bytes, ...]:
    if (
        not isinstance(raw, list)
        or (required and not raw)
        or not all(isinstance(h, str) and SHA256_HEX.match(h) for h in raw)
    ):
        raise _invalid(f"{where} must be a list of sha256 hex digests")
    return tuple(bytes.fromhex(h) for h in raw)


def _endpoint(name: str, raw: Any) -> EndpointSpec:
    where = f"endpoints.{name}"
    if not NAME.match(name) or not isinstance(raw, dict):
        raise _invalid(f"{where} must be a named object")
    hashes = _hashes(raw.get("key_hashes"), f"{where}.key_hashes", required=True)
    slots_raw = raw.get("slots")
    if not isinstance(slots_raw, dict) or not slots_raw:
        raise _invalid(f"{where}.slots must name at least one slot")
    slots = {slot: _slot(name, slot, body) for slot, body in slots_raw.items()}
    total = sum(s.traffic for s in slots.values())
    if total != 100:
        raise _invalid(f"{where}: slot traffic weights sum to {total}, not 100")
    mirror = raw.get("mirror")
    mirror_slot, mirror_percent = None, 0.0
    if mirror is not None:
        if not isinstance(mirror, dict) or not isinstance(mirror.get("slot"), str) or mirror["slot"] not in slots:
            raise _invalid(f"{where}.mirror.slot must be one of the endpoint's slots ({', '.join(slots)})")
        mirror_slot = mirror["slot"]
        mirror_percent = _number(mirror.get("percent"), f"{where}.mirror.percent", 0, MAX_MIRROR_PERCENT)
    stable = raw.get("stable")
    if stable is not None and (not isinstance(stable, str) or stable not in slots):
        raise _invalid(f"{where}.stable must be one of the endpoint's slots ({', '.join(slots)})")
    sample_rate = _number(raw.get("sample_rate", 1.0), f"{where}.sample_rate", 0, 1)
    shadow = _shadow(where, raw.get("shadow"), slots, stable)
    return EndpointSpec(name, hashes, slots, mirror_slot, mirror_percent, stable, sample_rate, shadow)


def _shadow(where: str, raw: Any, slots: dict[str, SlotSpec], stable: str | None) -> ShadowSpec | None:
    if raw is None:
        return None
    where = f"{where}.shadow"
    others = [slot for slot in slots if slot != stable]
    if stable is None:
        raise _invalid(f"{where} needs the endpoint's stable slot to compare with")
    if not isinstance(raw, dict) or not isinstance(raw.get("slot"), str) or raw["slot"] not in others:
        raise _invalid(
            f"{where}.slot must be one of the endpoint's slots other than the stable one ({', '.join(others)})"
        )
    percent = _number(raw.get("percent"), f"{where}.percent", 0, 100)
    tolerance = _number(raw.get("tolerance", 0.0), f"{where}.tolerance", 0, 1e9)
    edges = raw.get("edges")
    if edges is not None:
        if not isinstance(edges, list) or not 0 < len(edges) <= MAX_SHADOW_EDGES:
            raise _invalid(f"{where}.edges must be a list of 1 to {MAX_SHADOW_EDGES} numbers")
        values = tuple(_number(e, f"{where}.edges[{i}]", -1e300, 1e300) for i, e in enumerate(edges))
        if list(values) != sorted(values):
            raise _invalid(f"{where}.edges must be in increasing order")
        edges = values
    return ShadowSpec(raw["slot"], percent, tolerance, edges)


def parse_spec(raw: Any) -> Spec:
    if not isinstance(raw, dict) or not isinstance(raw.get("endpoints"), dict):
        raise _invalid("the body must be an object with 'endpoints'")
    endpoints = {name: _endpoint(name, body) for name, body in raw["endpoints"].items()}
    batching = None
    if raw.get("batching") is not None:
        b = raw["batching"]
        if not isinstance(b, dict):
            raise _invalid("batching must be an object")
        batching = Batching(
            max_batch_size=int(_number(b.get("max_batch_size", 64), "batching.max_batch_size", 1, 4096)),
            max_wait_ms=_number(b.get("max_wait_ms", 0.0), "batching.max_wait_ms", 0, 1000),
        )
    metrics = _hashes(raw.get("metrics_token_hashes", []), "metrics_token_hashes", required=False)
    return Spec(endpoints, batching, metrics)
