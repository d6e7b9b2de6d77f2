"""The API's reads of jobs, metric points and events: each row comes back as the JSON the API sends (see
`shared/store/json_sql.py`), a page at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    bindparam,
    exists,
    func,
    literal_column,
    select,
    tuple_,
)

from shared.store.json_sql import embedded_json, json_object, utc_time
from shared.store.models import Job, JobEvent, MetricPoint

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a list, and whether more follows it."""

    items: list[T]
    has_more: bool


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
            "requested_action": Job.requested_action,
            "status_reason": Job.status_reason,
            "lost_attempts": Job.lost_attempts,
            "resumed_from_step": Job.resumed_from_step,
            "heartbeat_at": utc_time(dialect, Job.heartbeat_at),
            "metadata": embedded_json(dialect, Job.labels),
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


@lru_cache
def _job_statement(dialect: str, scoped: bool) -> Select[str]:
    statement = select(_job_item(dialect)).where(Job.id == bindparam("job_id"))
    return statement.where(Job.project == bindparam("project")) if scoped else statement


@lru_cache
def _jobs_statement(dialect: str, after: bool, scoped: bool) -> Select[str]:
    statement = select(_job_item(dialect)).order_by(Job.created_at.desc(), Job.id.desc()).limit(bindparam("limit"))
    if scoped:
        statement = statement.where(Job.project == bindparam("project"))
    if after:
        anchor = select(Job.created_at, Job.id).where(Job.id == bindparam("after")).subquery()
        statement = statement.where(
            tuple_(Job.created_at, Job.id)
            < tuple_(select(anchor.c.created_at).scalar_subquery(), select(anchor.c.id).scalar_subquery())
        )
    return statement


def _of_project() -> ColumnElement[bool]:
    """The job of the statement's `job_id` is `project`'s: a scoped page is empty for another project's job, in the
    same query (the polling endpoints' hot path pays no second one)."""
    return exists().where(Job.id == bindparam("job_id"), Job.project == bindparam("project"))


@lru_cache
def _metrics_statement(dialect: str, scoped: bool = False) -> Select[int, str]:
    statement = (
        select(MetricPoint.step, _metric_item(dialect))
        .where(MetricPoint.job_id == bindparam("job_id"), MetricPoint.step > bindparam("after"))
        .order_by(MetricPoint.step)
        .limit(bindparam("limit"))
    )
    return statement.where(_of_project()) if scoped else statement


@lru_cache
def _events_statement(dialect: str, scoped: bool = False) -> Select[int, str]:
    statement = (
        select(JobEvent.id, _event_item(dialect))
        .where(JobEvent.job_id == bindparam("job_id"), JobEvent.id > bindparam("after"))
        .order_by(JobEvent.id)
        .limit(bindparam("limit"))
    )
    return statement.where(_of_project()) if scoped else statement


def job_exists(connection: Connection, job_id: str, project: str | None = None) -> bool:
    """Whether the job is in the database (and of `project`, when given: another project's job is as good as
    absent, so that a caller cannot tell it from one that never was)."""
    statement = select(Job.id).where(Job.id == job_id)
    if project is not None:
        statement = statement.where(Job.project == project)
    return connection.execute(statement).first() is not None


def read_job(connection: Connection, job_id: str, project: str | None = None) -> str | None:
    """The job as JSON, or None (also for a job of another project than `project`, when given)."""
    statement = _job_statement(connection.dialect.name, project is not None)
    found: str | None = connection.scalar(statement, {"job_id": job_id, "project": project})
    return found


def read_jobs(
    connection: Connection,
    *,
    limit: int,
    after: str | None = None,
    status: str | None = None,
    labels: dict[str, str] | None = None,
    project: str | None = None,
) -> Page[str]:
    """Jobs as JSON, newest first, of one project (every project: None), of one status and carrying every label
    given, when asked; `after` is the id of the last job of the previous page (LookupError if unknown)."""
    if after is not None and project is not None and not job_exists(connection, after, project):
        raise LookupError(after)  # another project's job is no cursor: its existence and age stay its own
    statement = _jobs_statement(connection.dialect.name, after is not None, project is not None)
    if status is not None:
        statement = statement.where(Job.status == status)
    for key, value in (labels or {}).items():
        statement = statement.where(Job.labels[key].as_string() == value)
    parameters: dict[str, Any] = {"project": project} if project is not None else {}
    if after is not None:
        parameters["after"] = after
    page = _page(connection, statement, parameters, limit)
    if after is not None and not page.items and not job_exists(connection, after, project):
        raise LookupError(after)
    return page


def _keyed_page(
    connection: Connection, statement: Select[int, str], parameters: dict[str, Any], limit: int
) -> Page[tuple[int, str]]:
    rows = connection.execute(statement, {**parameters, "limit": limit + 1}).all()
    return Page([(row[0], row[1]) for row in rows[:limit]], len(rows) > limit)


def metric_rows(
    connection: Connection, job_id: str, *, after_step: int, limit: int, project: str | None = None
) -> Page[tuple[int, str]]:
    """A job's metric points with step > after_step, in step order, as (step, JSON); none for a job of another
    project than `project`, when given."""
    parameters = {"job_id": job_id, "after": after_step, "project": project}
    statement = _metrics_statement(connection.dialect.name, project is not None)
    return _keyed_page(connection, statement, parameters, limit)


def event_rows(
    connection: Connection, job_id: str, *, after_id: int, limit: int, project: str | None = None
) -> Page[tuple[int, str]]:
    """A job's events with id > after_id, oldest first, as (id, JSON); none for a job of another project than
    `project`, when given."""
    parameters = {"job_id": job_id, "after": after_id, "project": project}
    statement = _events_statement(connection.dialect.name, project is not None)
    return _keyed_page(connection, statement, parameters, limit)


def read_metrics(
    connection: Connection, job_id: str, *, after_step: int, limit: int, project: str | None = None
) -> Page[str]:
    """A job's metric points with step > after_step, as JSON, in step order (none of another project's job)."""
    page = metric_rows(connection, job_id, after_step=after_step, limit=limit, project=project)
    return Page([item for _, item in page.items], page.has_more)


def read_events(
    connection: Connection, job_id: str, *, after_id: int, limit: int, project: str | None = None
) -> Page[str]:
    """A job's events with id > after_id, as JSON, oldest first (none of another project's job)."""
    page = event_rows(connection, job_id, after_id=after_id, limit=limit, project=project)
    return Page([item for _, item in page.items], page.has_more)
