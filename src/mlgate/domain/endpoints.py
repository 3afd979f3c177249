"""Endpoint allocations as data: which version serves in which slot, with what share of the traffic.

An allocation is immutable; deploying, shifting traffic and rolling back each produce a new one. The
weights of an endpoint's slots always sum to 100, and at most one slot receives a mirrored share (at
most 50%) of the live traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from mlgate.errors import ValidationError

SLOT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
MAX_SLOTS = 8
MAX_MIRROR_PERCENT = 50.0


@dataclass(frozen=True)
class SlotAllocation:
    slot: str
    model_version_id: int
    model: str
    version: int
    digest: str
    traffic: int

    def as_json(self) -> dict[str, Any]:
        return {
            "model_version_id": self.model_version_id,
            "name": self.model,
            "version": self.version,
            "digest": self.digest,
            "traffic": self.traffic,
        }


@dataclass(frozen=True)
class Mirror:
    slot: str
    percent: float


@dataclass(frozen=True)
class Allocation:
    slots: tuple[SlotAllocation, ...] = ()
    mirror: Mirror | None = None

    @classmethod
    def from_json(cls, slots: dict[str, Any], mirror: dict[str, Any] | None) -> Allocation:
        return cls(
            tuple(
                SlotAllocation(
                    slot=name,
                    model_version_id=int(raw["model_version_id"]),
                    model=str(raw["name"]),
                    version=int(raw["version"]),
                    digest=str(raw["digest"]),
                    traffic=int(raw["traffic"]),
                )
                for name, raw in slots.items()
            ),
            Mirror(str(mirror["slot"]), float(mirror["percent"])) if mirror else None,
        )

    def slots_json(self) -> dict[str, Any]:
        return {s.slot: s.as_json() for s in self.slots}

    def mirror_json(self) -> dict[str, Any] | None:
        return {"slot": self.mirror.slot, "percent": self.mirror.percent} if self.mirror else None

    def get(self, slot: str) -> SlotAllocation | None:
        return next((s for s in self.slots if s.slot == slot), None)

    @property
    def weights(self) -> dict[str, int]:
        return {s.slot: s.traffic for s in self.slots}


def _check_slot_name(slot: str) -> None:
    if not SLOT_NAME.match(slot):
        raise ValidationError(
            f"invalid slot name '{slot}': expected lowercase letters, digits and '-', starting with a letter "
            "(at most 16 characters), e.g. blue or green",
            details={"slot": slot},
        )


def _check_percent(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValidationError(f"{what} must be a whole number from 0 to 100, got {value!r}", details={"value": value})


def _share_rest(others: list[SlotAllocation], rest: int) -> list[SlotAllocation]:
    """Give `rest` percent to the other slots in proportion to their current weights (largest remainder)."""
    total = sum(s.traffic for s in others)
    if total == 0:
        if rest == 0:
            return others
        if len(others) == 1:
            return [replace(others[0], traffic=rest)]
        raise ValidationError(
            f"the other slots carry no traffic, so {rest}% has nowhere to go; "
            "set every weight with `mlgate endpoints traffic`",
            details={"slots": [s.slot for s in others]},
        )
    exact = [s.traffic * rest / total for s in others]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(others)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: rest - sum(shares)]:
        shares[i] += 1
    return [replace(s, traffic=share) for s, share in zip(others, shares, strict=True)]


def deploy(
    current: Allocation,
    *,
    slot: str,
    model_version_id: int,
    model: str,
    version: int,
    digest: str,
    traffic: int | None,
    mirror: float | None,
) -> Allocation:
    """`current` with `slot` serving the version. `traffic` None keeps the slot's weight (100 for an
    endpoint's first slot, 0 for a new one beside others); a number takes that share and scales the other
    slots to the rest. `mirror` sets the share of live traffic copied to this slot (0 stops it)."""
    _check_slot_name(slot)
    existing = current.get(slot)
    others = [s for s in current.slots if s.slot != slot]
    if existing is None and len(others) >= MAX_SLOTS:
        raise ValidationError(f"an endpoint has at most {MAX_SLOTS} slots", details={"slot": slot})
    if traffic is None:
        weight = existing.traffic if existing is not None else (0 if others else 100)
    else:
        _check_percent(traffic, "--traffic")
        weight = traffic
    if not others and weight != 100:
        raise ValidationError(
            f"'{slot}' is the endpoint's only slot, so it takes all the traffic (100), not {weight}",
            details={"slot": slot, "traffic": weight},
        )
    if traffic is not None:
        others = _share_rest(others, 100 - weight)
    placed = SlotAllocation(slot, model_version_id, model, version, digest, weight)
    by_slot = {s.slot: s for s in others} | {slot: placed}
    order = [s.slot for s in current.slots] + ([] if existing else [slot])
    ordered = tuple(by_slot[name] for name in order)
    new_mirror = current.mirror
    if mirror is not None:
        new_mirror = _mirror(slot, mirror)
    return Allocation(ordered, new_mirror)


def _mirror(slot: str, percent: float) -> Mirror | None:
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= MAX_MIRROR_PERCENT:
        raise ValidationError(
            f"the mirrored share must be from 0 to {MAX_MIRROR_PERCENT:g} percent, got {percent!r}",
            details={"mirror": percent},
        )
    return Mirror(slot, float(percent)) if percent > 0 else None


def shift(current: Allocation, weights: dict[str, int], *, mirror: Mirror | bool | None = False) -> Allocation:
    """New weights for named slots (slots not named get 0); the sum must be 100. `mirror` False keeps the
    mirror, None removes it, a Mirror sets it."""
    if not current.slots:
        raise ValidationError("the endpoint has no deployment yet: deploy a version first")
    unknown = sorted(set(weights) - {s.slot for s in current.slots})
    if unknown:
        raise ValidationError(
            f"unknown slot(s) {', '.join(unknown)}; the endpoint's slots are: "
            + ", ".join(s.slot for s in current.slots),
            details={"unknown": unknown},
        )
    for slot, weight in weights.items():
        _check_percent(weight, f"the weight of '{slot}'")
    total = sum(weights.values())
    if total != 100:
        shown = " + ".join(f"{slot}={w}" for slot, w in weights.items())
        raise ValidationError(f"weights must sum to 100, got {shown} = {total}", details={"weights": weights})
    new_mirror = current.mirror
    if mirror is None or isinstance(mirror, Mirror):
        if isinstance(mirror, Mirror):
            if current.get(mirror.slot) is None:
                raise ValidationError(f"cannot mirror to unknown slot '{mirror.slot}'", details={"slot": mirror.slot})
            new_mirror = _mirror(mirror.slot, mirror.percent)
        else:
            new_mirror = None
    slots = tuple(replace(s, traffic=weights.get(s.slot, 0)) for s in current.slots)
    return Allocation(slots, new_mirror)
