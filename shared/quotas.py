"""Holding projects to their limits (shared/access/projects.py stores them; None is no limit).

- At submit: a project with `max_queued_jobs` queued jobs already gets a 429 (QuotaExceeded); a job asking for more
  steps than `max_steps`, or more GPUs than `max_gpus`, is a 422 naming the limit.
- At claim: a job whose project is at `max_running_jobs` running jobs, or would pass `max_gpus` GPUs in use, stays
  queued, held, with a `status_reason` ("project research: 2 of 2 running jobs"). Jobs of a project start in the
  order they were submitted: the queued jobs submitted before it count against the limit first. Other projects'
  jobs are not held back: the check reads only the job's own project.
- When a slot frees (a job of the project ends, or a worker's sweep finds one free), the oldest held jobs that fit
  are sent to the workers again; their claims decide, so a message too many is harmless.

Claims of one project are serialized by a write to the project's row taken first in the claim's transaction (a row
lock on PostgreSQL, the database's write lock on SQLite): two workers cannot both take the last slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from shared.queue import dispatch
from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.spec.problems import Problem, SpecError
from shared.store.db import Database
from shared.store.events import add_event
from shared.store.models import Job, Project, utcnow
from shared.store.states import JobStatus

log = logging.getLogger(__name__)


class QuotaExceeded(RuntimeError):
    """A request over one of its project's limits; the message names the limit and who can change it."""


@dataclass(frozen=True)
class _Usage:
    """What a project's jobs hold: running jobs and their GPUs."""

    running: int
    gpus: int


def _project(session: Session, name: str) -> Project | None:
    return session.get(Project, name)


def _lock(session: Session, name: str) -> None:
    """Serialize the decisions about this project's slots until the transaction ends."""
    session.execute(update(Project).where(Project.name == name).values(name=Project.name))


def _change_it(project: str, limit: str) -> str:
    return f"an admin can raise it (grpo projects update {project} --{limit.replace('_', '-')} N)"


def check_submit(session: Session, project: str, spec: JobSpec) -> None:
    """Refuse a new job over its project's limits: SpecError (422) for what the spec asks, QuotaExceeded (429) for
    a full queue."""
    limits = _project(session, project)
    if limits is None:
        return
    problems = []
    steps = spec.args.get("max_steps")
    if limits.max_steps is not None and (not isinstance(steps, int) or steps <= 0 or steps > limits.max_steps):
        asked = f"asks for {steps}" if isinstance(steps, int) and steps > 0 else "runs by epochs (no max_steps)"
        problems.append(
            Problem(
                "args.max_steps",
                f"project {project} allows at most {limits.max_steps} steps per job (max_steps), and this job {asked}: "
                f"set args.max_steps to {limits.max_steps} or fewer, or {_change_it(project, 'max_steps')}",
            )
        )
    needed = spec.resources.gpus_needed()
    if limits.max_gpus is not None and needed > limits.max_gpus:
        problems.append(
            Problem(
                "resources",
                f"the job needs {needed} GPU(s), and project {project} may use {limits.max_gpus} at most (max_gpus): "
                f"ask for fewer, or {_change_it(project, 'max_gpus')}",
            )
        )
    if problems:
        raise SpecError(problems)
    check_queue(session, project, limits)


def check_queue(session: Session, project: str, limits: Project | None = None) -> None:
    """QuotaExceeded when one more queued job would pass the project's `max_queued_jobs`."""
    limits = limits or _project(session, project)
    if limits is None or limits.max_queued_jobs is None:
        return
    _lock(session, project)
    queued = session.scalar(select(func.count()).where(Job.project == project, Job.status == JobStatus.QUEUED.value))
    if (queued or 0) >= limits.max_queued_jobs:
        raise QuotaExceeded(
            f"project {project} has {queued} of {limits.max_queued_jobs} queued jobs (max_queued_jobs): wait for one "
            f"to start, cancel one, or {_change_it(project, 'max_queued_jobs')}"
        )


def gpus_on(job: Job, worker_gpus: int) -> int:
    """The GPUs the job takes on a worker with `worker_gpus` (one, on a GPU worker, where it names no count)."""
    if worker_gpus <= 0:
        return 0
    named = (job.spec.get("resources") or {}).get("gpus")
    return job.gpus_needed + (1 if named is None else 0)


def _usage(session: Session, project: str) -> _Usage:
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(Job.gpus_held), 0)).where(
            Job.project == project, Job.status == JobStatus.RUNNING.value
        )
    ).one()
    return _Usage(int(row[0]), int(row[1]))


def _ahead(session: Session, job: Job) -> _Usage:
    """The project's queued jobs submitted before `job`: they start first."""
    earlier = or_(Job.created_at < job.created_at, and_(Job.created_at == job.created_at, Job.id < job.id))
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(Job.gpus_needed), 0)).where(
            Job.project == job.project,
            Job.status == JobStatus.QUEUED.value,
            earlier,
            # Not one that waits for a worker big enough to exist: it would hold every later job back for good.
            or_(Job.status_reason.is_(None), Job.held_since.is_not(None)),
        )
    ).one()
    return _Usage(int(row[0]), int(row[1]))


def hold_reason(session: Session, job_id: str, worker_gpus: int = 0) -> str | None:
    """Why the queued job must wait for its project's slots (on a worker of `worker_gpus` GPUs), or None when it
    may start now. Call it in the claim's own transaction: it locks the project's slots until the claim commits."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.QUEUED.value:
        return None
    limits = _project(session, job.project)
    if limits is None or (limits.max_running_jobs is None and limits.max_gpus is None):
        return None
    _lock(session, job.project)
    usage, ahead = _usage(session, job.project), _ahead(session, job)
    waiting = f", {ahead.running} submitted before it waiting" if ahead.running else ""
    if limits.max_running_jobs is not None and usage.running + ahead.running >= limits.max_running_jobs:
        return f"project {job.project}: {usage.running} of {limits.max_running_jobs} running jobs{waiting}"
    needs = gpus_on(job, worker_gpus)
    if limits.max_gpus is not None and usage.gpus + ahead.gpus + needs > limits.max_gpus:
        return (
            f"project {job.project}: {usage.gpus} of {limits.max_gpus} GPUs in use, and the job needs {needs}{waiting}"
        )
    return None


def hold(session: Session, job_id: str, reason: str) -> None:
    """Keep the queued job waiting for its project's slots, saying why (one event per new reason)."""
    job = session.get(Job, job_id)
    if job is None:
        return
    if job.held_since is None:
        job.held_since = utcnow()
    if job.status_reason != reason:
        job.status_reason = reason
        add_event(session, job_id, "info", f"waiting: {reason}", {"held": True})


def _releasable(session: Session, project: str, sent_before: datetime | None) -> list[str]:
    """The oldest held jobs of the project that fit in its free slots now (in submit order)."""
    limits = _project(session, project)
    statement = select(Job.id, Job.gpus_needed).where(
        Job.project == project, Job.status == JobStatus.QUEUED.value, Job.held_since.is_not(None)
    )
    if sent_before is not None:
        statement = statement.where(or_(Job.dispatched_at.is_(None), Job.dispatched_at < sent_before))
    held = session.execute(statement.order_by(Job.created_at, Job.id)).all()
    if not held:
        return []
    usage = _usage(session, project)
    slots = None if limits is None or limits.max_running_jobs is None else limits.max_running_jobs - usage.running
    gpus = None if limits is None or limits.max_gpus is None else limits.max_gpus - usage.gpus
    chosen = []
    for job_id, needed in held:
        if (slots is not None and slots <= 0) or (gpus is not None and needed > gpus):
            break  # submit order: a later job does not jump one that does not fit yet
        chosen.append(job_id)
        slots = None if slots is None else slots - 1
        gpus = None if gpus is None else gpus - needed
    return chosen


def release_held(
    database: Database, celery_app: Celery, settings: Settings, project: str, sent_before: datetime | None = None
) -> list[str]:
    """Send the held jobs of `project` that fit its free slots to the workers again (those whose last message went
    out before `sent_before`, when given); returns their ids. Never raises for a broker that is away: the sweep
    sends them later."""
    with database.session() as session:
        job_ids = _releasable(session, project, sent_before)
    for job_id in job_ids:
        try:
            dispatch(database, celery_app, settings, job_id)
        except Exception:
            log.warning("job %s: a slot of project %s is free, but its message could not be sent", job_id, project)
    return job_ids


def release_all_held(database: Database, celery_app: Celery, settings: Settings, quiet_seconds: float) -> list[str]:
    """From a worker's sweep: release, in every project, the held jobs not sent for `quiet_seconds`."""
    sent_before = utcnow() - timedelta(seconds=quiet_seconds)
    with database.session() as session:
        projects = list(
            session.scalars(
                select(Job.project).where(Job.status == JobStatus.QUEUED.value, Job.held_since.is_not(None)).distinct()
            )
        )
    released = []
    for project in projects:
        released += release_held(database, celery_app, settings, project, sent_before)
    return released
