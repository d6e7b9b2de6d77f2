"""The job store: jobs, their metric points and events, read and written in one place.

Status changes are not here: they go through `shared.states`, the state machine.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.models import Job, JobEvent, MetricPoint, utcnow
from shared.spec import JobSpec
from shared.states import JobStatus

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list, and whether more follows it."""

    items: list[T]
    has_more: bool


@dataclass
class MetricRecord:
    """What the trainer logged at one step, as the worker hands it to the store."""

    step: int
    epoch: float | None
    metrics: dict[str, Any]
    logged_at: datetime


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return f"job-{secrets.token_hex(8)}"


def create_job(session: Session, spec: JobSpec) -> Job:
    """Store a validated spec as a queued job (the caller commits, then sends it to the queue)."""
    job = Job(
        id=new_job_id(),
        name=spec.name,
        status=JobStatus.QUEUED.value,
        spec=spec.model_dump(mode="json", exclude_unset=True),
        created_at=utcnow(),
        attempt=0,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "status", "job queued", {"status": JobStatus.QUEUED.value})
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    """The job, or None."""
    return session.get(Job, job_id)


def _page(session: Session, statement: Select[T], limit: int) -> Page[T]:
    rows = list(session.scalars(statement.limit(limit + 1)))
    return Page(rows[:limit], len(rows) > limit)


def list_jobs(session: Session, *, limit: int, after: str | None = None) -> Page[Job]:
    """Jobs, newest first; `after` is the id of the last job of the previous page."""
    statement = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if after is not None:
        anchor = session.get(Job, after)
        if anchor is None:
            raise LookupError(after)
        statement = statement.where(tuple_(Job.created_at, Job.id) < tuple_(anchor.created_at, anchor.id))
    return _page(session, statement, limit)


def list_metrics(session: Session, job_id: str, *, after_step: int, limit: int) -> Page[MetricPoint]:
    """Metric points of a job with step > after_step, in step order."""
    statement = (
        select(MetricPoint)
        .where(MetricPoint.job_id == job_id, MetricPoint.step > after_step)
        .order_by(MetricPoint.step)
    )
    return _page(session, statement, limit)


def list_events(session: Session, job_id: str, *, after_id: int, limit: int) -> Page[JobEvent]:
    """Events of a job with id > after_id, oldest first."""
    statement = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id).order_by(JobEvent.id)
    return _page(session, statement, limit)


def add_event(session: Session, job_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
    """Record something that happened to a job."""
    session.add(
        JobEvent(job_id=job_id, kind=kind, message=json_safe(message), data=json_safe(data), created_at=utcnow())
    )


def json_safe(value: Any) -> Any:
    """`value` as JSON (and Postgres' text and JSONB) can hold it: NaN and infinities become null, NUL characters
    are dropped, tuples become lists; nested values alike."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def record_metrics(session: Session, job_id: str, records: list[MetricRecord]) -> None:
    """Upsert metric points (a re-sent step replaces, never duplicates) and the job's latest step."""
    if not records:
        return
    rows = [
        {
            "job_id": job_id,
            "step": r.step,
            "epoch": json_safe(r.epoch),
            "metrics": json_safe(r.metrics),
            "logged_at": r.logged_at,
        }
        for r in records
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(MetricPoint).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[MetricPoint.job_id, MetricPoint.step],
        set_={
            "epoch": statement.excluded.epoch,
            "metrics": statement.excluded.metrics,
            "logged_at": statement.excluded.logged_at,
        },
    )
    session.execute(statement)
    latest = max(rows, key=lambda row: row["step"])
    session.execute(
        update(Job).where(Job.id == job_id).values(latest_step=latest["step"], latest_metrics=latest["metrics"])
    )


def set_job_fields(session: Session, job_id: str, **values: Any) -> None:
    """Set progress fields of a job (total_steps, summary): never its status, which `shared.states` owns."""
    if "status" in values:
        raise ValueError("status changes go through shared.states.transition")
    session.execute(update(Job).where(Job.id == job_id).values(**values))
