"""JSON bodies of the read endpoints, as the database writes them (see shared/store/json_sql.py).

The shapes are the pydantic models of `api/schemas.py`, which document them in OpenAPI; a test checks every body
against them.
"""

from __future__ import annotations

from fastapi import Response

from shared.store.reads import Page


class JSONText(Response):
    """A response whose body is already JSON."""

    media_type = "application/json"


def render_page(page: Page[str]) -> JSONText:
    """`{"data": [...], "has_more": ...}` from items already written as JSON."""
    return JSONText(f'{{"data":[{",".join(page.items)}],"has_more":{"true" if page.has_more else "false"}}}')
