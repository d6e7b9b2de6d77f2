"""The web dashboard: one page (`api/static/`) over the public API, with its vendored chart and YAML libraries."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard's page; the rest is `/static/...` and the API."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
