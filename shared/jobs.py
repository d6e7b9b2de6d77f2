"""The job store: jobs, their metric points and events, read and written in one place.

Status changes are not here: they go through `shared.states`, the state machine.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    bindparam,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.json_sql import embedded_json, json_object, utc_time
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


# --- Reads for the API: each row comes back as the JSON the API sends (see shared/json_sql.py) ---------------


def _job_item(dialect: str) -> ColumnElement[str]:
    """A job as `api.schemas.JobOut`."""
    return json_object(
        dialect,
        {
            "id": Job.id,
            "object": literal_column("'job'", String),
            "name": Job.name,
            "model": func.coalesce(Job.spec["model"].as_string(), ""),
            "status": Job.status,
            "created_at": utc_time(dialect, Job.created_at),
            "started_at": utc_time(dialect, Job.started_at),
            "finished_at": utc_time(dialect, Job.finished_at),
            "error": Job.error,
            "attempt": Job.attempt,
            "worker": Job.worker,
            "total_steps": Job.total_steps,
            "latest_step": Job.latest_step,
            "latest_metrics": embedded_json(dialect, Job.latest_metrics),
            "summary": embedded_json(dialect, Job.summary),
            "spec": embedded_json(dialect, Job.spec),
        },
    )


def _metric_item(dialect: str) -> ColumnElement[str]:
    """A metric point as `api.schemas.MetricPointOut`."""
    return json_object(
        dialect,
        {
            "step": MetricPoint.step,
            "epoch": MetricPoint.epoch,
            "metrics": embedded_json(dialect, MetricPoint.metrics),
            "logged_at": utc_time(dialect, MetricPoint.logged_at),
        },
    )


def _event_item(dialect: str) -> ColumnElement[str]:
    """An event as `api.schemas.EventOut`."""
    return json_object(
        dialect,
        {
            "id": JobEvent.id,
            "created_at": utc_time(dialect, JobEvent.created_at),
            "kind": JobEvent.kind,
            "message": JobEvent.message,
            "data": embedded_json(dialect, JobEvent.data),
        },
    )


def _page(connection: Connection, statement: Select[str], parameters: dict[str, Any], limit: int) -> Page[str]:
    items = list(connection.scalars(statement, {**parameters, "limit": limit + 1}))
    return Page(items[:limit], len(items) > limit)


# The read statements are built once per dialect and take their values as parameters.


@lru_cache
def _job_statement(dialect: str) -> Select[str]:
    return select(_job_item(dialect)).where(Job.id == bindparam("job_id"))


@lru_cache
def _jobs_statement(dialect: str, after: bool) -> Select[str]:
    statement = select(_job_item(dialect)).order_by(Job.created_at.desc(), Job.id.desc()).limit(bindparam("limit"))
    if after:
        anchor = select(Job.created_at, Job.id).where(Job.id == bindparam("after")).subquery()
        statement = statement.where(
            tuple_(Job.created_at, Job.id)
            < tuple_(select(anchor.c.created_at).scalar_subquery(), select(anchor.c.id).scalar_subquery())
        )
    return statement


@lru_cache
def _metrics_statement(dialect: str) -> Select[str]:
    return (
        select(_metric_item(dialect))
        .where(MetricPoint.job_id == bindparam("job_id"), MetricPoint.step > bindparam("after"))
        .order_by(MetricPoint.step)
        .limit(bindparam("limit"))
    )


@lru_cache
def _events_statement(dialect: str) -> Select[str]:
    return (
        select(_event_item(dialect))
        .where(JobEvent.job_id == bindparam("job_id"), JobEvent.id > bindparam("after"))
        .order_by(JobEvent.id)
        .limit(bindparam("limit"))
    )


def job_exists(connection: Connection, job_id: str) -> bool:
    """Whether the job is in the database."""
    return connection.execute(select(Job.id).where(Job.id == job_id)).first() is not None


def read_job(connection: Connection, job_id: str) -> str | None:
    """The job as JSON, or None."""
    found: str | None = connection.scalar(_job_statement(connection.dialect.name), {"job_id": job_id})
    return found


def read_jobs(connection: Connection, *, limit: int, after: str | None = None) -> Page[str]:
    """Jobs as JSON, newest first; `after` is the id of the last job of the previous page (LookupError if unknown)."""
    statement = _jobs_statement(connection.dialect.name, after is not None)
    page = _page(connection, statement, {"after": after} if after is not None else {}, limit)
    if after is not None and not page.items and not job_exists(connection, after):
        raise LookupError(after)
    return page


def read_metrics(connection: Connection, job_id: str, *, after_step: int, limit: int) -> Page[str]:
    """A job's metric points with step > after_step, as JSON, in step order."""
    return _page(
        connection, _metrics_statement(connection.dialect.name), {"job_id": job_id, "after": after_step}, limit
    )


def read_events(connection: Connection, job_id: str, *, after_id: int, limit: int) -> Page[str]:
    """A job's events with id > after_id, as JSON, oldest first."""
    return _page(connection, _events_statement(connection.dialect.name), {"job_id": job_id, "after": after_id}, limit)


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


@lru_cache
def _upsert_metrics_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(MetricPoint)
    return statement.on_conflict_do_update(
        index_elements=[MetricPoint.job_id, MetricPoint.step],
        set_={
            "epoch": statement.excluded.epoch,
            "metrics": statement.excluded.metrics,
            "logged_at": statement.excluded.logged_at,
        },
    )


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
    # One statement, compiled once, executed for all rows (batched by the driver): no per-batch SQL to build,
    # and no limit on how many rows a batch may hold.
    session.execute(_upsert_metrics_statement(session.get_bind().dialect.name), rows)
    latest = max(rows, key=lambda row: row["step"])
    session.execute(
        update(Job).where(Job.id == job_id).values(latest_step=latest["step"], latest_metrics=latest["metrics"])
    )


def set_job_fields(session: Session, job_id: str, **values: Any) -> None:
    """Set progress fields of a job (total_steps, summary): never its status, which `shared.states` owns."""
    if "status" in values:
        raise ValueError("status changes go through shared.states.transition")
    session.execute(update(Job).where(Job.id == job_id).values(**values))
