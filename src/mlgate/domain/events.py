"""Domain events: what happened, published by the service that made it happen, for the workers that act on it.

An event is a fact about a committed change (it is published after the transaction that made it), small
and immutable; a subscriber that must act reads the current state itself. See `services.events`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestApproved:
    """A promotion request reached its last approval: the promotion worker copies the version."""

    request_id: int
    target: str


@dataclass(frozen=True)
class VersionPromoted:
    """A version's copy landed in `environment`: staging's pipeline opens its gate B request and checks;
    production's rollout worker rolls it out."""

    request_id: int
    environment: str


@dataclass(frozen=True)
class ChecksRequested:
    """Someone asked for a version's checks to run (again)."""

    environment: str
    name: str
    version: int


@dataclass(frozen=True)
class AlertFired:
    """A monitor crossed its threshold; an alert whose action is `retrain` starts a retraining."""

    alert_id: int
    environment: str
    monitor: str


@dataclass(frozen=True)
class JobEnded:
    """A job reached its end (succeeded, failed or cancelled): a retraining that waits on it goes on."""

    job_id: int
    environment: str
    state: str


Event = RequestApproved | VersionPromoted | ChecksRequested | AlertFired | JobEnded
