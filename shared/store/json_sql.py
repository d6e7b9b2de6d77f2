"""JSON in the database: values made storable (`json_safe`), and JSON written by the database itself, with the same
meaning on PostgreSQL and SQLite.

The read endpoints are the service's hot path: building each row's JSON in SQL leaves the API process only the
joining of strings, where parsing every stored step and serialising it again cost most of a request.

The two databases write the same values, not the same bytes: Postgres puts spaces around `:` and orders the keys of
JSONB values its own way, writes a float as large as 1e300 in full digits and 1e-7 as 0.0000001; SQLite writes a
REAL column (`epoch`) with 15 significant digits. Parsed, both give the same objects (to 15 digits).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, String, case, func, literal_column


def json_object(dialect: str, fields: dict[str, Any]) -> ColumnElement[str]:
    """`{"name": value, ...}` in field order; values are column expressions."""
    arguments: list[Any] = []
    for name, value in fields.items():
        # Keys are written into the SQL (they are fixed names), not sent as parameters on every query.
        arguments += [literal_column(f"'{name}'", String), value]
    build = func.json_build_object if dialect == "postgresql" else func.json_object
    return build(*arguments).cast(String)


def embedded_json(dialect: str, column: Any) -> Any:
    """A JSON column nested as JSON (SQLite keeps JSON as text, which json_object would quote as a string).

    On SQLite, text that is not valid JSON reads as null instead of failing the whole page (the service only stores
    valid JSON; this keeps one damaged row from hiding its neighbours).
    """
    if dialect == "postgresql":
        return column
    return case((func.json_valid(column) == 1, func.json(column)), else_=None)


def utc_time(dialect: str, column: Any) -> ColumnElement[Any]:
    """A timestamp as ISO 8601 in UTC with microseconds: `2026-11-25T07:23:52.121824Z`."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    # SQLAlchemy stores SQLite timestamps as `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC here.
    return func.replace(column, " ", "T", type_=String) + "Z"


def json_safe(value: Any) -> Any:
    """`value` as JSON (and Postgres' text and JSONB) can hold it: NaN and infinities become null, NUL characters
    are dropped, tuples become lists; nested values alike."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        # NUL and lone surrogates (from undecodable file names, say) cannot be stored as text.
        return value.replace("\x00", "").encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
