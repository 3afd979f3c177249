"""The integers a route takes in its path or query, bounded before they reach a service: a row id or a version
number is 1 to MAX_ROW_ID (what every database mlgate supports stores in an integer column), a byte offset
0 to MAX_OFFSET. Anything else is a 422 naming the parameter, never a database error."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from mlgate.domain.limits import MAX_OFFSET, MAX_ROW_ID

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
OptionalRowIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]
