"""The job store: jobs, their metric points and events, read and written in one place.

Status changes are not here: they go through `shared.store.states`, the state machine.
"""

from __future__ import annotations

import hashlib
import json
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
    case,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.spec.job import JobSpec
from shared.store import samples
from shared.store.json_sql import embedded_json, json_object, utc_time
from shared.store.models import Checkpoint, Job, JobEvent, MetricPoint, utcnow
from shared.store.states import JobStatus

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
    # A few of the step's completions (see shared/store/samples.py), when the trainer had some to show.
    samples: list[dict[str, Any]] | None = None


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return f"job-{secrets.token_hex(8)}"


class LeaseLost(RuntimeError):
    """The claim writing this no longer owns the job (cancelled, paused, or taken over after its lease expired)."""


def spec_fingerprint(spec: JobSpec) -> str:
    """A digest of the spec as stored, to tell a retried request from a different one under the same key."""
    canonical = json.dumps(
        spec.model_dump(mode="json", exclude_unset=True, by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_job(session: Session, spec: JobSpec, idempotency_key: str | None = None) -> Job:
    """Store a validated spec as a queued job (the caller commits, then sends it to the queue)."""
    job = Job(
        id=new_job_id(),
        name=spec.name,
        labels=spec.metadata,
        gpus_needed=spec.resources.gpus_needed(),
        status=JobStatus.QUEUED.value,
        spec=spec.model_dump(mode="json", exclude_unset=True, by_alias=True),
        created_at=utcnow(),
        attempt=0,
        lost_attempts=0,
        # The API sends its message right after the commit; the sweep counts from here.
        dispatched_at=utcnow(),
        idempotency_key=idempotency_key,
        request_fingerprint=spec_fingerprint(spec) if idempotency_key else None,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "status", "job queued", {"status": JobStatus.QUEUED.value})
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    """The job, or None."""
    return session.get(Job, job_id)


def job_by_idempotency_key(session: Session, key: str) -> Job | None:
    """The job first submitted under this Idempotency-Key, or None."""
    return session.scalar(select(Job).where(Job.idempotency_key == key))


def gpus_needed(session: Session, job_id: str) -> int:
    """The GPUs the job needs of a worker (0 for an unknown job)."""
    return int(session.scalar(select(Job.gpus_needed).where(Job.id == job_id)) or 0)


def mark_dispatched(session: Session, job_id: str) -> None:
    """Note that a "run job X" message was just sent."""
    session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=utcnow()))


def undispatched_jobs(session: Session, sent_before: datetime, max_gpus: int) -> list[str]:
    """Queued jobs that fit `max_gpus` GPUs whose last message went out before `sent_before`: lost, when an idle
    worker that takes their queue never got them."""
    statement = select(Job.id).where(
        Job.status == JobStatus.QUEUED.value,
        Job.gpus_needed <= max_gpus,
        or_(Job.dispatched_at.is_(None), Job.dispatched_at < sent_before),
    )
    return list(session.scalars(statement.order_by(Job.created_at)))


def _fence(session: Session, job_id: str, attempt: int, **values: Any) -> None:
    """Lock the job's row for this claim (setting `values`), or raise LeaseLost if the claim no longer owns it."""
    held = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING.value)
        .values(**(values or {"heartbeat_at": Job.heartbeat_at}))
        .returning(Job.id)
    ).first()
    if held is None:
        raise LeaseLost(f"attempt {attempt} no longer owns job {job_id}")


# --- Reads for the API: each row comes back as the JSON the API sends (see shared/store/json_sql.py) ---------------


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


def _trains_adapter(dialect: str) -> ColumnElement[bool]:
    """Whether the checkpoint's job trains a LoRA adapter: its spec has a `peft_config`."""
    if dialect == "postgresql":
        return func.jsonb_typeof(Job.spec["peft_config"]) == "object"
    return func.json_type(Job.spec, "$.peft_config") == "object"


def _json_boolean(dialect: str, condition: ColumnElement[bool]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.coalesce(condition, false())
    # SQLite's json() marks its result as JSON, so json_object nests `true`, not 1 or a string.
    return func.json(case((condition, "true"), else_="false"))


def _checkpoint_item(dialect: str) -> ColumnElement[str]:
    """A checkpoint as `api.schemas.CheckpointOut`, with the metrics logged at its step. A LoRA job's checkpoints
    and final model are adapters, which apply to the job's `model` (`base_model`)."""
    adapter = _trains_adapter(dialect)
    return json_object(
        dialect,
        {
            "name": Checkpoint.name,
            "step": Checkpoint.step,
            "attempt": Checkpoint.attempt,
            "created_at": utc_time(dialect, Checkpoint.created_at),
            "size_bytes": Checkpoint.size_bytes,
            "adapter": _json_boolean(dialect, adapter),
            "base_model": case((adapter, Job.spec["model"].as_string()), else_=None),
            "metrics": embedded_json(dialect, MetricPoint.metrics),
        },
    )


def read_checkpoints(connection: Connection, job_id: str) -> list[str]:
    """A job's checkpoints as JSON, by step (the final model last)."""
    dialect = connection.dialect.name
    statement = (
        select(_checkpoint_item(dialect))
        .select_from(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .outerjoin(MetricPoint, (MetricPoint.job_id == Checkpoint.job_id) & (MetricPoint.step == Checkpoint.step))
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step, Checkpoint.name == FINAL_MODEL)
    )
    return list(connection.scalars(statement))


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
def _metrics_statement(dialect: str) -> Select[int, str]:
    return (
        select(MetricPoint.step, _metric_item(dialect))
        .where(MetricPoint.job_id == bindparam("job_id"), MetricPoint.step > bindparam("after"))
        .order_by(MetricPoint.step)
        .limit(bindparam("limit"))
    )


@lru_cache
def _events_statement(dialect: str) -> Select[int, str]:
    return (
        select(JobEvent.id, _event_item(dialect))
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


def read_jobs(
    connection: Connection,
    *,
    limit: int,
    after: str | None = None,
    status: str | None = None,
    labels: dict[str, str] | None = None,
) -> Page[str]:
    """Jobs as JSON, newest first, of one status and carrying every label given, when asked; `after` is the id of
    the last job of the previous page (LookupError if unknown)."""
    statement = _jobs_statement(connection.dialect.name, after is not None)
    if status is not None:
        statement = statement.where(Job.status == status)
    for key, value in (labels or {}).items():
        statement = statement.where(Job.labels[key].as_string() == value)
    page = _page(connection, statement, {"after": after} if after is not None else {}, limit)
    if after is not None and not page.items and not job_exists(connection, after):
        raise LookupError(after)
    return page


def _keyed_page(
    connection: Connection, statement: Select[int, str], parameters: dict[str, Any], limit: int
) -> Page[tuple[int, str]]:
    rows = connection.execute(statement, {**parameters, "limit": limit + 1}).all()
    return Page([(row[0], row[1]) for row in rows[:limit]], len(rows) > limit)


def metric_rows(connection: Connection, job_id: str, *, after_step: int, limit: int) -> Page[tuple[int, str]]:
    """A job's metric points with step > after_step, in step order, as (step, JSON)."""
    parameters = {"job_id": job_id, "after": after_step}
    return _keyed_page(connection, _metrics_statement(connection.dialect.name), parameters, limit)


def event_rows(connection: Connection, job_id: str, *, after_id: int, limit: int) -> Page[tuple[int, str]]:
    """A job's events with id > after_id, oldest first, as (id, JSON)."""
    parameters = {"job_id": job_id, "after": after_id}
    return _keyed_page(connection, _events_statement(connection.dialect.name), parameters, limit)


def read_metrics(connection: Connection, job_id: str, *, after_step: int, limit: int) -> Page[str]:
    """A job's metric points with step > after_step, as JSON, in step order."""
    page = metric_rows(connection, job_id, after_step=after_step, limit=limit)
    return Page([item for _, item in page.items], page.has_more)


def read_events(connection: Connection, job_id: str, *, after_id: int, limit: int) -> Page[str]:
    """A job's events with id > after_id, as JSON, oldest first."""
    page = event_rows(connection, job_id, after_id=after_id, limit=limit)
    return Page([item for _, item in page.items], page.has_more)


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
        # NUL and lone surrogates (from undecodable file names, say) cannot be stored as text.
        return value.replace("\x00", "").encode("utf-8", "backslashreplace").decode("utf-8")
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


def record_metrics(
    session: Session, job_id: str, attempt: int, records: list[MetricRecord], keep_sample_steps: int = 200
) -> None:
    """Upsert metric points (a re-sent step replaces, never duplicates), their samples (the newest
    `keep_sample_steps` steps' are kept) and the job's latest step.

    Fenced: raises LeaseLost, writing nothing, when `attempt` no longer owns the job.
    """
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
    latest = max(rows, key=lambda row: row["step"])
    _fence(
        session,
        job_id,
        attempt,
        latest_step=latest["step"],
        latest_metrics=latest["metrics"],
        points_ingested=Job.points_ingested + len(rows),
    )
    # One statement, compiled once, executed for all rows (batched by the driver): no per-batch SQL to build,
    # and no limit on how many rows a batch may hold.
    session.execute(_upsert_metrics_statement(session.get_bind().dialect.name), rows)
    by_step = {r.step: json_safe(r.samples) for r in records if r.samples}
    samples.store_samples(session, job_id, by_step, keep_sample_steps)


def discard_metrics_after(session: Session, job_id: str, attempt: int, step: int) -> int:
    """Delete the points past `step` (a resumed run logs them again) and note the rewind on the job; fenced."""
    latest = session.execute(
        select(MetricPoint.step, MetricPoint.metrics)
        .where(MetricPoint.job_id == job_id, MetricPoint.step <= step)
        .order_by(MetricPoint.step.desc())
        .limit(1)
    ).first()
    _fence(
        session,
        job_id,
        attempt,
        resumed_from_step=step,
        latest_step=latest.step if latest else None,
        latest_metrics=latest.metrics if latest else None,
    )
    result = session.execute(delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > step))
    samples.discard_samples_after(session, job_id, step)
    return int(getattr(result, "rowcount", 0) or 0)


# --- Checkpoints -----------------------------------------------------------------------------------------------

FINAL_MODEL = "final"


def record_checkpoint(
    session: Session, job_id: str, attempt: int, *, name: str, step: int, path: str, size_bytes: int
) -> None:
    """Register a checkpoint (or, under FINAL_MODEL, the final model) a claim saved; fenced."""
    _fence(session, job_id, attempt)
    session.merge(
        Checkpoint(
            job_id=job_id, name=name, step=step, attempt=attempt, path=path, size_bytes=size_bytes, created_at=utcnow()
        )
    )


def forget_checkpoints(session: Session, job_id: str, attempt: int, names: list[str]) -> None:
    """Unregister checkpoints the trainer deleted (save_total_limit); fenced."""
    if names:
        _fence(session, job_id, attempt)
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.name.in_(names)))


def training_checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    """A job's training checkpoints (not its final model), newest first: where a resume may continue from."""
    return list(
        session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.name != FINAL_MODEL)
            .order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc())
        )
    )


def get_checkpoint(session: Session, job_id: str, name: str) -> Checkpoint | None:
    """One checkpoint of a job by name, or None."""
    return session.get(Checkpoint, (job_id, name))


def set_job_fields(session: Session, job_id: str, attempt: int, **values: Any) -> None:
    """Set progress fields of a running job (total_steps) for its claim; never its status (`shared.store.states`
    owns it).

    Fenced: raises LeaseLost when `attempt` no longer owns the job.
    """
    if "status" in values:
        raise ValueError("status changes go through shared.states.transition")
    _fence(session, job_id, attempt, **values)
