"""Liveness and readiness."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import tempfile
from collections.abc import Callable

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Services, ServicesDep
from api.errors import RETRY_AFTER_SECONDS, first_line

router = APIRouter(tags=["health"])
log = logging.getLogger("grpo.api")
BROKER_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
def healthz(svc: ServicesDep) -> dict[str, str]:
    """The API process is up (touches nothing else: the floor of what any endpoint costs). Says `auth: off` when
    the API runs open (GRPO_AUTH=off)."""
    return {"status": "ok"} if svc.settings.auth == "on" else {"status": "ok", "auth": "off"}


def _database(svc: Services) -> None:
    with svc.database.session() as session:
        session.execute(text("SELECT 1"))


def _broker(svc: Services) -> None:
    """A round trip to the broker, bounded in time: a query of the embedded broker's SQLite file, a PING to Redis,
    or a connection through kombu for any other."""
    url, timeout = svc.settings.effective_broker_url, BROKER_TIMEOUT_SECONDS
    if url.startswith("sqla+sqlite:///"):
        path = url.removeprefix("sqla+sqlite:///")
        with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as broker:
            broker.execute("SELECT 1")
    elif url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    else:
        with svc.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)


def _storage(svc: Services) -> None:
    """The data dir takes a file (uploads and downloads go through it)."""
    svc.settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=svc.settings.data_dir, prefix=".readyz-") as probe:
        probe.write(b"ok")
        probe.flush()
        os.fsync(probe.fileno())


CHECKS: dict[str, Callable[[Services], None]] = {"database": _database, "broker": _broker, "storage": _storage}


@router.get("/readyz", responses={503: {"description": "a part does not answer; the body says which"}})
def readyz(svc: ServicesDep) -> JSONResponse:
    """Whether the API can serve: its database, its broker and its storage each answer (what compose and a load
    balancer check). 503, with what failed, while any does not; the reasons themselves stay in the API's log."""
    answers = {}
    for name, check in CHECKS.items():
        try:
            check(svc)
            answers[name] = "ok"
        except Exception as error:
            # Unreachable parts raise whatever their client library raises; the log keeps it (it can name hosts).
            log.warning("readyz: the %s does not answer: %s", name, first_line(error))
            answers[name] = "unavailable"
    ready = all(answer == "ok" for answer in answers.values())
    body = {"status": "ok" if ready else "unavailable", **answers}
    headers = None if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)
