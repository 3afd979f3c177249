"""SQL expressions each dialect writes its own way: the seconds between two stored times.

SQLite keeps times as ISO text (`julianday` reads them, in days; rounded to the millisecond); PostgreSQL
as timestamps (the epoch of their difference, to the microsecond). Aggregate reads (`services.telemetry`)
sum and bucket these in the database instead of fetching every row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

SECONDS_PER_DAY = 86400.0


class elapsed_seconds(FunctionElement[float]):  # a SQL function, named as one
    """`elapsed_seconds(end, start)`: end - start in seconds (NULL when either is)."""

    type = Float()
    inherit_cache = True
    name = "elapsed_seconds"

    def __init__(self, end: Any, start: Any) -> None:  # two columns or expressions of time
        super().__init__(end, start)


def _ends(element: elapsed_seconds, compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    end, start = list(element.clauses)
    return compiler.process(end, **kw), compiler.process(start, **kw)


@compiles(elapsed_seconds)
def _epoch(element: elapsed_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = _ends(element, compiler, **kw)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(elapsed_seconds, "sqlite")
def _julian(element: elapsed_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = _ends(element, compiler, **kw)
    # A Julian day number as a double holds time to some 20 microseconds: rounded to the millisecond, a
    # duration of exactly a bucket's bound lands in that bucket.
    return f"round((julianday({end}) - julianday({start})) * {SECONDS_PER_DAY}, 3)"
