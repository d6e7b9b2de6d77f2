"""The worker registry: each worker process registers when it starts, renews a heartbeat from its sweep, says
which job it runs, and signs off when it stops. Operators read it (`GET /v1/workers`, `/metrics`)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, case, func, select, update
from sqlalchemy.orm import Session

from shared.spec.resources import gpu_count
from shared.store.models import Job, Worker, utcnow


def register(session: Session, name: str, devices: dict[str, Any] | None = None) -> None:
    """Record a worker that just started (a restarted one under the same name starts afresh)."""
    now = utcnow()
    session.merge(
        Worker(
            name=name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            current_job=None,
            devices=devices,
            stopped_at=None,
        )
    )


def heartbeat(session: Session, name: str, current_job: str | None) -> None:
    """The worker is alive, and runs `current_job` (None: idle)."""
    session.execute(update(Worker).where(Worker.name == name).values(heartbeat_at=utcnow(), current_job=current_job))


def sign_off(session: Session, name: str) -> None:
    """The worker stopped on purpose."""
    session.execute(update(Worker).where(Worker.name == name).values(stopped_at=utcnow(), current_job=None))


def alive_since(seconds: float) -> Any:
    """The condition for a worker alive now: not stopped, with a heartbeat in the last `seconds`."""
    return (Worker.stopped_at.is_(None)) & (Worker.heartbeat_at >= utcnow() - timedelta(seconds=seconds))


def largest_gpu_count(connection: Connection, seconds: float) -> int | None:
    """The most GPUs any worker alive now has (None: no worker is alive)."""
    found = list(connection.scalars(select(Worker.devices).where(alive_since(seconds))))
    if not found:
        return None
    return max(gpu_count(devices) for devices in found)


def count_alive(connection: Connection, seconds: float) -> int:
    """Workers alive now."""
    return int(connection.scalar(select(func.count()).select_from(Worker).where(alive_since(seconds))) or 0)


def list_workers(
    connection: Connection, seconds: float, limit: int = 200, project: str | None = None
) -> list[dict[str, Any]]:
    """Workers seen in the last day, newest heartbeat first, each with whether it is alive. Workers are shared by
    every project; with `project`, the job a worker runs is shown only when it is that project's."""
    visible = select(Job.id).where(Job.id == Worker.current_job, Job.project == project).exists()
    current_job = Worker.current_job if project is None else case((visible, Worker.current_job), else_=None)
    columns = (
        Worker.name,
        Worker.hostname,
        Worker.pid,
        current_job.label("current_job"),
        Worker.devices,
        Worker.started_at,
        Worker.heartbeat_at,
        Worker.stopped_at,
    )
    statement = (
        select(*columns, alive_since(seconds).label("alive"))
        .where(Worker.heartbeat_at >= utcnow() - timedelta(days=1))
        .order_by(Worker.heartbeat_at.desc())
        .limit(limit)
    )
    return [{**row._asdict(), "alive": bool(row.alive)} for row in connection.execute(statement)]
