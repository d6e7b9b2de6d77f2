"""The job state machine: which status may follow which, and the conditional UPDATEs that move a job.

Every status change in the service goes through this module. Each is a single
`UPDATE ... WHERE id = :id AND status IN (:legal_sources) [AND attempt = :attempt]`, so two processes racing for
the same job can never both win: the database row, not the broker message, says who owns a job. A running job
is owned by one claim (its `attempt`) for as long as its worker renews the lease; every write a worker makes is
fenced by that attempt, so a worker that lost its lease can no longer change anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from shared.store.events import add_event, by_key
from shared.store.models import Job, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# For each status, the statuses a job may be in just before it.
ALLOWED_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    # Handed back by a stopping worker, requeued after its worker was lost, or resumed after a pause.
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.PAUSED}),
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    # A job can fail before it runs (its broker message could not be sent).
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}),
}


def _record(session: Session, job_id: str, status: JobStatus, message: str, data: dict[str, Any] | None) -> None:
    add_event(session, job_id, "status", message, {"status": status.value, **(data or {})})


def transition(
    session: Session,
    job_id: str,
    to: JobStatus,
    *,
    attempt: int | None = None,
    only_from: frozenset[JobStatus] | None = None,
    lease_expired_before: datetime | None = None,
    message: str | None = None,
    event_data: dict[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Move `job_id` to `to` if its current status allows it; returns whether it moved.

    `attempt`, when given, fences the write: only the claim that holds that attempt number may move the job.
    `only_from` narrows the statuses the move may start from (a user resumes only a paused job, say).
    `lease_expired_before` moves the job only if its lease (still) ended before that time: the sweep must not take a
    job from a worker that renewed its lease after the sweep listed it.
    `values` are other columns to set in the same UPDATE. A move is recorded as an event.
    """
    if to in TERMINAL:
        values.setdefault("finished_at", utcnow())
    if to != JobStatus.RUNNING:
        # The lease and any pending request belong to the claim that is ending.
        values.setdefault("lease_expires_at", None)
        values.setdefault("requested_action", None)
    # A reason to wait (a quota, no worker big enough) belonged to the queued job it was: the next one is found anew.
    values.setdefault("held_since", None)
    values.setdefault("status_reason", None)
    sources = ALLOWED_SOURCES[to] & only_from if only_from is not None else ALLOWED_SOURCES[to]
    statement = update(Job).where(Job.id == job_id, Job.status.in_([s.value for s in sources]))
    if attempt is not None:
        statement = statement.where(Job.attempt == attempt)
    if lease_expired_before is not None:
        statement = statement.where(or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < lease_expired_before))
    if session.execute(statement.values(status=to.value, **values).returning(Job.id)).first() is None:
        return False
    _record(session, job_id, to, message or f"job {to.value}", event_data)
    return True


def claim(session: Session, job_id: str, worker: str, lease_seconds: float, gpus_held: int = 0) -> int | None:
    """Take a queued job for `worker`, where it holds `gpus_held` GPUs: returns the new attempt number, or None when
    the job is not queued."""
    now = utcnow()
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            attempt=Job.attempt + 1,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            requested_action=None,
            status_reason=None,
            held_since=None,
            gpus_held=gpus_held,
        )
        .returning(Job.attempt)
    )
    attempt = session.execute(statement).scalar_one_or_none()
    if attempt is None:
        return None
    if attempt == 1:  # how long the job waited for its first worker (/metrics' submit-to-running histogram)
        created_at = session.scalar(select(Job.created_at).where(Job.id == job_id))
        if created_at is not None:
            waited = max((now - created_at).total_seconds(), 0.0)
            session.execute(update(Job).where(Job.id == job_id).values(queued_seconds=waited))
    _record(
        session,
        job_id,
        JobStatus.RUNNING,
        f"job running on {worker} (attempt {attempt})",
        {"worker": worker, "attempt": attempt},
    )
    return attempt


class LeaseLost(RuntimeError):
    """The claim writing this no longer owns the job (cancelled, paused, or taken over after its lease expired)."""


def fence(session: Session, job_id: str, attempt: int, **values: Any) -> None:
    """Lock the job's row for this claim (setting `values`), or raise LeaseLost if the claim no longer owns it."""
    held = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING.value)
        .values(**(values or {"heartbeat_at": Job.heartbeat_at}))
        .returning(Job.id)
    ).first()
    if held is None:
        raise LeaseLost(f"attempt {attempt} no longer owns job {job_id}")


@dataclass
class Lease:
    """What a renewal found: whether the claim still owns the job, and what a user asked of it."""

    held: bool
    status: str | None
    requested_action: str | None


def renew_lease(session: Session, job_id: str, attempt: int, lease_seconds: float) -> Lease:
    """Extend the running job's lease for this claim; `held` is False once the job is no longer this claim's."""
    now = utcnow()
    renewed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING.value)
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Job.requested_action)
    ).first()
    if renewed is not None:
        return Lease(True, JobStatus.RUNNING.value, renewed.requested_action)
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return Lease(False, status, None)


def request_action(session: Session, job_id: str, action: str, by: str | None = None) -> bool:
    """Ask the worker of a running job to do `action` ("pause"), for the key `by`; False when the job is not
    running."""
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(requested_action=action)
        .returning(Job.id)
    ).first()
    if moved is None:
        return False
    add_event(session, job_id, "info", f"{action} requested", {"action": action, **by_key(by)})
    return True


@dataclass
class ExpiredLease:
    """A running job whose worker stopped renewing its claim."""

    job_id: str
    attempt: int
    worker: str | None
    lost_attempts: int
    requested_action: str | None


def expired_leases(session: Session, now: datetime) -> list[ExpiredLease]:
    """Running jobs whose lease ended before `now` (or that never had one: rows older than leases)."""
    rows = session.execute(
        select(Job.id, Job.attempt, Job.worker, Job.lost_attempts, Job.requested_action).where(
            Job.status == JobStatus.RUNNING.value,
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
        )
    )
    return [ExpiredLease(row.id, row.attempt, row.worker, row.lost_attempts, row.requested_action) for row in rows]
