"""Jobs as the store keeps them: creating one from a validated spec, finding it, and the marks of its dispatch.

Status changes are not here: they go through `shared.store.states`, the state machine.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import (
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from shared.access.projects import DEFAULT_PROJECT
from shared.spec.job import JobSpec
from shared.store.events import add_event, by_key
from shared.store.models import Job, utcnow
from shared.store.states import JobStatus, fence


def new_job_id() -> str:
    """A fresh, unguessable job id."""
    return f"job-{secrets.token_hex(8)}"


def spec_fingerprint(spec: JobSpec) -> str:
    """A digest of the spec as stored, to tell a retried request from a different one under the same key."""
    canonical = json.dumps(
        spec.model_dump(mode="json", exclude_unset=True, by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_job(
    session: Session,
    spec: JobSpec,
    idempotency_key: str | None = None,
    project: str = DEFAULT_PROJECT,
    by: str | None = None,
) -> Job:
    """Store a validated spec as a queued job of `project`, submitted by the key `by` (the caller commits, then
    sends it to the queue)."""
    job = Job(
        id=new_job_id(),
        project=project,
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
    add_event(session, job.id, "status", "job queued", {"status": JobStatus.QUEUED.value, **by_key(by)})
    return job


def get_job(session: Session, job_id: str, project: str | None = None) -> Job | None:
    """The job, or None; of `project` only, when given (another project's job is as good as absent)."""
    job = session.get(Job, job_id)
    return job if job is not None and project in (None, job.project) else None


def job_by_idempotency_key(session: Session, key: str, project: str) -> Job | None:
    """The job of `project` first submitted under this Idempotency-Key, or None."""
    return session.scalar(select(Job).where(Job.project == project, Job.idempotency_key == key))


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
        # A job held by its project's limits is not lost: shared/quotas.py sends it when a slot frees.
        Job.held_since.is_(None),
        or_(Job.dispatched_at.is_(None), Job.dispatched_at < sent_before),
    )
    return list(session.scalars(statement.order_by(Job.created_at)))


def set_job_fields(session: Session, job_id: str, attempt: int, **values: Any) -> None:
    """Set progress fields of a running job (total_steps) for its claim; never its status (`shared.store.states`
    owns it).

    Fenced: raises LeaseLost when `attempt` no longer owns the job.
    """
    if "status" in values:
        raise ValueError("status changes go through shared.states.transition")
    fence(session, job_id, attempt, **values)
