"""What users do to jobs: submit (idempotently), cancel, pause and resume.

Status changes themselves are `shared.store.states`' conditional UPDATEs; this module decides which one a user's
request means, and refuses, with a reason, the requests a job's status does not allow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from shared import quotas
from shared.access.projects import DEFAULT_PROJECT
from shared.access.secrets import missing_secrets
from shared.queue import dispatch
from shared.settings import Settings
from shared.spec.job import JobSpec, check_files, file_ids
from shared.spec.problems import SpecError
from shared.store import files, jobs, workers
from shared.store.db import Database
from shared.store.events import add_event, by_key
from shared.store.models import Job
from shared.store.states import TERMINAL, JobStatus, request_action, transition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who asks: the project a new job goes to, the key (by prefix) that events name, and the project whose jobs
    the actor may touch (None: every project, for an admin)."""

    project: str
    key_prefix: str | None = None
    scope: str | None = None


# Callers that act for nobody in particular (the service itself, its tests of the store): the default project.
DEFAULT_ACTOR = Actor(DEFAULT_PROJECT)


class BrokerUnavailable(RuntimeError):
    """The job was stored but its message could not be sent; the job is marked failed."""


class IdempotencyConflict(RuntimeError):
    """An Idempotency-Key already used for a different request."""


class ActionRefused(RuntimeError):
    """The job's status does not allow what was asked (cancel a finished job, resume a running one, ...)."""


def _replay(job: Job, spec: JobSpec) -> Job:
    if job.request_fingerprint != jobs.spec_fingerprint(spec):
        raise IdempotencyConflict(
            f"the Idempotency-Key was already used for job {job.id} with a different spec: use a new key for a "
            "new job, or send the same spec to get that job back"
        )
    return job


def submit_job(
    database: Database,
    celery_app: Celery,
    settings: Settings,
    spec: JobSpec,
    idempotency_key: str | None = None,
    actor: Actor = DEFAULT_ACTOR,
) -> tuple[Job, bool]:
    """Store a validated spec as a queued job of the actor's project and send it to the workers; returns (job,
    replayed). The spec may name only files and secrets of that project, and must fit its limits (SpecError,
    QuotaExceeded).

    With an Idempotency-Key, the same key and spec return the job first submitted with them (replayed=True);
    the same key with another spec raises IdempotencyConflict. The row is committed before the message is sent, so
    a worker that receives the message always finds the job. When the broker cannot be reached the job is marked
    failed (with the reason) and BrokerUnavailable is raised.
    """
    if idempotency_key is not None:
        with database.session() as session:
            existing = jobs.job_by_idempotency_key(session, idempotency_key, actor.project)
        if existing is not None:
            return _replay(existing, spec), True
    try:
        with database.session() as session:
            # The files it names are share-locked until the job is stored: a delete waits, then sees the job.
            columns = files.file_columns(session, file_ids(spec), lock=True, project=actor.project)
            problems = check_files(spec, columns) + missing_secrets(session, actor.project, spec.secrets)
            if problems:
                raise SpecError(problems)
            quotas.check_submit(session, actor.project, spec)
            job = jobs.create_job(session, spec, idempotency_key, actor.project, actor.key_prefix)
            _explain_if_unholdable(session, settings, job)
    except IntegrityError:
        # A concurrent request with the same key stored its job first.
        with database.session() as session:
            existing = jobs.job_by_idempotency_key(session, idempotency_key or "", actor.project)
        if existing is None:
            raise
        return _replay(existing, spec), True
    try:
        dispatch(database, celery_app, settings, job.id)
    except SQLAlchemyError:
        raise  # the database, not the broker: the job stays queued, and a worker's sweep sends it once it is back
    except Exception as error:
        log.exception("could not send job %s to the broker", job.id)
        message = f"could not send the job to the broker ({type(error).__name__}: {error}); submit it again"
        with database.session() as session:
            # The key is released: a retry with it must make a new job, not replay this failure.
            transition(session, job.id, JobStatus.FAILED, error=message, message=message, idempotency_key=None)
        raise BrokerUnavailable(message) from error
    return job, False


def _explain_if_unholdable(session: Session, settings: Settings, job: Job) -> None:
    """A job that no worker alive now could hold is told so (an event and its status_reason) instead of waiting
    silently; it stays queued, for a worker with enough GPUs that may still come."""
    needed = job.gpus_needed
    if needed <= 0:
        return
    largest = workers.largest_gpu_count(session.connection(), settings.worker_alive_seconds)
    if largest is None:
        reason = (
            f"needs a worker with {needed} GPU(s), and no worker is running: start one "
            "(docker compose up -d --scale worker=N)"
        )
    elif largest < needed:
        reason = (
            f"needs a worker with {needed} GPU(s) (resources.gpus + resources.vllm_gpus), and the largest worker "
            f"running has {largest}: start a worker with at least {needed} GPUs, or ask for fewer"
        )
    else:
        return
    job.status_reason = reason
    add_event(session, job.id, "info", f"waiting: {reason}", {"gpus_needed": needed, "largest_worker": largest})


def _current(database: Database, job_id: str, actor: Actor) -> Job:
    """The job as the actor may see it; LookupError for one that is not there or not the actor's to see."""
    with database.session() as session:
        job = jobs.get_job(session, job_id, actor.scope)
    if job is None:
        raise LookupError(job_id)
    return job


def cancel_job(database: Database, job_id: str, actor: Actor = DEFAULT_ACTOR) -> None:
    """Cancel a job that has not ended; a running one's worker ends its training process within a heartbeat."""
    job = _current(database, job_id, actor)
    if job.status in TERMINAL:
        raise ActionRefused(f"job {job_id} is already {job.status}: there is nothing to cancel")
    note = "; its worker stops the training process" if job.status == JobStatus.RUNNING else ""
    with database.session() as session:
        if transition(
            session,
            job_id,
            JobStatus.CANCELLED,
            message=f"job cancelled by a user{note}",
            event_data=by_key(actor.key_prefix),
        ):
            return
    status = _current(database, job_id, actor).status
    raise ActionRefused(f"job {job_id} ended before it could be cancelled: it is {status}")


def pause_job(database: Database, job_id: str, actor: Actor = DEFAULT_ACTOR) -> None:
    """Pause a job: a queued one at once; a running one after its worker saves a checkpoint and lets it go."""
    _current(database, job_id, actor)
    # Both tried, whatever the status was a moment ago: the job may be claimed in between.
    with database.session() as session:
        if transition(
            session,
            job_id,
            JobStatus.PAUSED,
            only_from=frozenset({JobStatus.QUEUED}),
            message="job paused before it started",
            event_data=by_key(actor.key_prefix),
        ):
            return
        if request_action(session, job_id, "pause", by=actor.key_prefix):
            return
    job = _current(database, job_id, actor)
    raise ActionRefused(f"job {job_id} is {job.status}: only a queued or running job can be paused")


def resume_job(
    database: Database, celery_app: Celery, settings: Settings, job_id: str, actor: Actor = DEFAULT_ACTOR
) -> None:
    """Queue a paused job again; a worker continues it from its latest checkpoint. QuotaExceeded when its
    project's queue is full."""
    job = _current(database, job_id, actor)
    with database.session() as session:
        if job.status == JobStatus.PAUSED:
            quotas.check_queue(session, job.project)
        moved = transition(
            session,
            job_id,
            JobStatus.QUEUED,
            only_from=frozenset({JobStatus.PAUSED}),
            message="job resumed by a user: queued to continue from its latest checkpoint",
            event_data=by_key(actor.key_prefix),
        )
    if not moved:
        job = _current(database, job_id, actor)
        raise ActionRefused(f"job {job_id} is {job.status}: only a paused job can be resumed")
    try:
        dispatch(database, celery_app, settings, job_id)
    except SQLAlchemyError:
        raise  # the database, not the broker (the job is queued: a worker's sweep sends it)
    except Exception as error:
        # The job stays queued; a worker's sweep sends it again once the broker is back.
        raise BrokerUnavailable(
            f"the job is queued but its message could not be sent ({error}); "
            "a worker will pick it up when the broker is back"
        ) from error
