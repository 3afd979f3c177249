"""What every schema module builds on: times answered UTC-aware, and strict request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from mlgate.adapters.sql.queries import as_utc

# Every stored time is UTC, but SQLite hands them back naive: say so, the same way every time.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class StrictBody(BaseModel):
    """A request body. Strict: "30" is not a number and true is not a day count; say so rather than guess."""

    model_config = ConfigDict(extra="forbid", strict=True)
