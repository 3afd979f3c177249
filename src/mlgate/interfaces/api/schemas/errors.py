"""The body of every refusal of the API, 4xx and 5xx alike: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str  # machine-readable: invalid_input, not_found, forbidden... (mlgate.errors)
    message: str  # for people: names what is wrong
    details: dict[str, Any]  # what the message names, as data; `problems` for invalid input


class ErrorPublic(BaseModel):
    error: ErrorDetail
