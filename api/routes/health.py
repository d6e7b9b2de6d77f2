"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import ServicesDep
from api.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(svc: ServicesDep) -> dict[str, str]:
    """The API process is up (touches nothing else: the floor of what any endpoint costs). Says `auth: off` when
    the API runs open (GRPO_AUTH=off)."""
    return {"status": "ok"} if svc.settings.auth == "on" else {"status": "ok", "auth": "off"}


@router.get("/readyz")
def readyz(svc: ServicesDep) -> dict[str, str]:
    """The API can reach its database."""
    try:
        with svc.database.session() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:
        raise ApiError(503, "database_unavailable", f"cannot reach the database: {error}") from error
    return {"status": "ok", "database": "ok"}
