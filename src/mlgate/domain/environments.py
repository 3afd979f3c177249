"""Environments as the permission table and the gates see them: their place in the promotion order."""

from __future__ import annotations

from enum import StrEnum


class EnvironmentKind(StrEnum):
    """Where an environment stands in the promotion order; the permission table is keyed on it."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


def kind_at(index: int, count: int) -> EnvironmentKind:
    """The first environment is where people train, the last is production, the others stage."""
    if index == 0:
        return EnvironmentKind.DEVELOPMENT
    if index == count - 1:
        return EnvironmentKind.PRODUCTION
    return EnvironmentKind.STAGING
