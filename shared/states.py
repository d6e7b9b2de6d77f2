"""The job state machine: which status may follow which, and the one conditional UPDATE that moves a job.

Every status change in the service goes through `transition` (or `claim`, its special case for queued → running).
Each is a single `UPDATE ... WHERE id = :id AND status IN (:legal_sources)`, so two processes racing for the same
job can never both win: the database row, not the broker message, says who owns a job.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.models import Job, JobEvent, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# For each status, the statuses a job may be in just before it.
ALLOWED_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(),
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    # A job can fail before it runs (its broker message could not be sent).
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}


def transition(
    session: Session,
    job_id: str,
    to: JobStatus,
    *,
    attempt: int | None = None,
    message: str | None = None,
    event_data: dict[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Move `job_id` to `to` if its current status allows it; returns whether it moved.

    `attempt`, when given, fences the write: only the claim that holds that attempt number may move the job.
    `values` are other columns to set in the same UPDATE. A move is recorded as an event.
    """
    sources = ALLOWED_SOURCES[to]
    if not sources:
        raise ValueError(f"no transition leads to {to}")
    if to in TERMINAL:
        values.setdefault("finished_at", utcnow())
    statement = update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in sources]))
    if attempt is not None:
        statement = statement.where(Job.attempt == attempt)
    result = session.execute(statement.values(status=to.value, **values).returning(Job.status))
    if result.first() is None:
        return False
    session.add(
        JobEvent(
            job_id=job_id,
            kind="status",
            message=message or f"job {to.value}",
            data={"status": to.value, **(event_data or {})},
        )
    )
    return True


def claim(session: Session, job_id: str, worker: str, now: datetime | None = None) -> int | None:
    """Take a queued job for `worker`: returns the new attempt number, or None when the job is not queued."""
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(status=JobStatus.RUNNING.value, attempt=Job.attempt + 1, worker=worker, started_at=now or utcnow())
        .returning(Job.attempt)
    )
    attempt = session.execute(statement).scalar_one_or_none()
    if attempt is None:
        return None
    session.add(
        JobEvent(
            job_id=job_id,
            kind="status",
            message=f"job running on {worker} (attempt {attempt})",
            data={"status": JobStatus.RUNNING.value, "worker": worker, "attempt": attempt},
        )
    )
    return attempt
