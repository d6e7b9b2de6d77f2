"""What a worker does with a "run job X" message: claim the job, train it in a child process while holding the
job's lease, and record how it ended.

While the child trains, the worker renews the lease every heartbeat. A renewal that fails means the job is no
longer this claim's (cancelled, or taken over after the lease expired): the child is ended at once and nothing
more is written. A pause request, or the worker being asked to stop (SIGTERM), makes the child save a checkpoint
and stop; the job is then paused, or handed back to the queue for another worker to resume. A child that finishes
no step, evaluation batch or save for `stall_seconds` once training began is ended and the job failed, saying
where it was stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import DataError, SQLAlchemyError

from shared import quotas
from shared.access.projects import DEFAULT_PROJECT
from shared.access.secrets import SecretUnavailable, job_environment
from shared.queue import dispatch
from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.spec.resources import gpu_count
from shared.store import jobs, workers
from shared.store.db import Database
from shared.store.events import add_event
from shared.store.json_sql import json_safe
from shared.store.models import Job
from shared.store.states import JobStatus, Lease, claim, renew_lease, transition
from worker.protocol import Outcome
from worker.training_process import TrainingProcess

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
MAX_ERROR_CHARS = 2000
# Waits between tries of recording a job's end while the database is unreachable (about a minute in all).
FINISH_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


@dataclass
class WorkerContext:
    """What every job a worker runs shares: settings, database, Celery app, name, and whether it is stopping."""

    settings: Settings
    database: Database
    celery: Celery
    name: str
    stopping: threading.Event = field(default_factory=threading.Event)
    # When the worker last became idle (monotonic), or None while it runs a job: the reconciler resends lost
    # messages only from an idle worker, which would otherwise have received them.
    idle_since: float | None = field(default_factory=time.monotonic)
    # The job it runs now, as the worker registry shows it.
    current_job: str | None = None
    # What it registered with (worker/devices.py): its GPUs are split between a job's training and its vLLM.
    devices: dict[str, Any] = field(default_factory=dict)


def execute_job(context: WorkerContext, job_id: str) -> None:
    """Run job `job_id` if it is still queued; any other status means someone else owns it or it is over."""
    settings, database = context.settings, context.database
    with database.session() as session:
        # In one transaction: the project's slots stay locked until the claim that takes one commits.
        worker_gpus = gpu_count(context.devices)
        reason = quotas.hold_reason(session, job_id, worker_gpus)
        if reason is not None:
            quotas.hold(session, job_id, reason)
            log.info("job %s waits: %s", job_id, reason)
            return
        job = jobs.get_job(session, job_id)  # read by hold_reason already: this session's copy
        held = quotas.gpus_on(job, worker_gpus) if job is not None else 0
        attempt = claim(session, job_id, context.name, settings.lease_seconds, held)
        if attempt is None:
            # Read again: the copy above may predate whoever took or ended the job.
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            log.info("job %s is %s, not queued: nothing to do", job_id, status or "missing")
            return
        project = job.project if job is not None else DEFAULT_PROJECT
    log.info("job %s claimed (attempt %d)", job_id, attempt)
    context.idle_since = None
    _show_current_job(context, job_id)
    try:
        _run_claimed(context, job_id, attempt)
    finally:
        context.idle_since = time.monotonic()
        _show_current_job(context, None)
        # Its slot is free: the project's next held job may start (on this worker or another).
        try:
            quotas.release_held(database, context.celery, settings, project)
        except SQLAlchemyError:
            log.warning("job %s: could not release its project's held jobs (the sweep will)", job_id, exc_info=True)


def _show_current_job(context: WorkerContext, job_id: str | None) -> None:
    """Tell the worker registry at once (the sweep's heartbeat would say it only later)."""
    context.current_job = job_id
    try:
        with context.database.session() as session:
            workers.heartbeat(session, context.name, job_id)
    except SQLAlchemyError:  # the registry is for people to read: never a reason to fail a job
        log.warning("could not update the worker registry", exc_info=True)


def _run_claimed(context: WorkerContext, job_id: str, attempt: int) -> None:
    process: TrainingProcess | None = None
    try:
        secrets = _job_secrets(context, job_id)
        process = TrainingProcess(context.settings, job_id, attempt, gpu_count(context.devices), secrets)
        with context.database.session() as session:
            add_event(
                session,
                job_id,
                "info",
                f"training process {process.pid} started (attempt {attempt})",
                {"pid": process.pid, "attempt": attempt, "log": str(process.log_path)},
            )
        _supervise(context, job_id, attempt, process)
    except SecretUnavailable as error:  # before any process started: the job fails, saying which secret and why
        _finish(context.database, job_id, attempt, Outcome.failed(str(error)))
    except BaseException as error:
        # The worker itself is failing: end the child, and leave no job `running` for nobody.
        if process is not None:
            process.kill()
        _finish(context.database, job_id, attempt, Outcome.failed(f"the worker failed while training: {error!r}"))
        raise


def _job_secrets(context: WorkerContext, job_id: str) -> dict[str, str]:
    """The secrets the job names, decrypted for its training process (never logged); SecretUnavailable when one
    was deleted since the job was submitted or this worker's key does not open it."""
    with context.database.session() as session:
        job = jobs.get_job(session, job_id)
        if job is None:
            return {}
        names = JobSpec.model_validate(job.spec).secrets
        return job_environment(session, context.settings, job.project, names)


def _supervise(context: WorkerContext, job_id: str, attempt: int, process: TrainingProcess) -> None:
    settings = context.settings
    stop_reason: str | None = None
    stop_deadline = float("inf")
    next_heartbeat = 0.0
    while (outcome := process.wait(POLL_SECONDS)) is None:
        now = time.monotonic()
        if now >= next_heartbeat:
            next_heartbeat = now + settings.heartbeat_seconds
            lease = _renew(context, job_id, attempt)
            if lease is not None and not lease.held:
                process.kill()
                _note_lost(context.database, job_id, attempt, lease.status)
                return
            if lease is not None and lease.requested_action == "pause" and stop_reason is None:
                stop_reason, stop_deadline = "pause", now + settings.stop_grace_seconds
                process.request_stop(stop_reason)
        if context.stopping.is_set() and stop_reason is None:
            stop_reason, stop_deadline = "handoff", now + settings.stop_grace_seconds
            process.request_stop(stop_reason)
        if stop_reason is not None and now > stop_deadline:
            process.kill()
            why = f"no checkpoint within {settings.stop_grace_seconds:g} s of the request"
            _stop(context, job_id, attempt, stop_reason, step=None, why=why)
            return
        if process.last_progress is not None and now - process.last_progress > settings.stall_seconds:
            where = process.where_stuck()
            process.kill()
            _finish(
                context.database,
                job_id,
                attempt,
                Outcome.failed(_stall_message(settings.stall_seconds, process.last_step, where)),
            )
            return
    if stop_reason is not None and outcome.stopped_at_step is not None:
        _stop(context, job_id, attempt, stop_reason, step=outcome.stopped_at_step, why="checkpoint saved")
    else:
        _finish(context.database, job_id, attempt, outcome)


def _renew(context: WorkerContext, job_id: str, attempt: int) -> Lease | None:
    try:
        with context.database.session() as session:
            return renew_lease(session, job_id, attempt, context.settings.lease_seconds)
    except SQLAlchemyError:
        # The database is unreachable: keep training; if it stays away, the lease expires and the job is
        # requeued, and this claim's writes are refused from then on.
        log.exception("job %s: could not renew the lease", job_id)
        return None


def _stall_message(seconds: float, last_step: int | None, where: list[str]) -> str:
    stuck = f"; stuck in {' <- '.join(where)}" if where else ""
    return f"stalled: no training progress for {seconds:g} s (at step {last_step}){stuck}"


def _note_lost(database: Database, job_id: str, attempt: int, status: str | None) -> None:
    """The claim lost its job: say so in the events (nothing else may be written for this attempt)."""
    log.info(
        "job %s: attempt %d no longer owns the job (it is %s); its result is not recorded", job_id, attempt, status
    )
    if status == JobStatus.CANCELLED:
        with database.session() as session:
            add_event(session, job_id, "info", f"training process of attempt {attempt} ended: job cancelled")


def _stop(context: WorkerContext, job_id: str, attempt: int, reason: str, step: int | None, why: str) -> None:
    """The child stopped on request: pause the job, or hand it back to the queue for another worker."""
    where = f"at step {step} ({why})" if step is not None else f"({why}; it continues from its latest checkpoint)"
    with context.database.session() as session:
        # A pause asked for while the worker was stopping wins: the job waits for its user, not for a worker.
        if reason == "handoff" and session.scalar(select(Job.requested_action).where(Job.id == job_id)) == "pause":
            reason = "pause"
        if reason == "pause":
            status, message = JobStatus.PAUSED, f"job paused {where}"
        else:
            status, message = JobStatus.QUEUED, f"worker {context.name} stopping: job handed back {where}"
        moved = transition(session, job_id, status, attempt=attempt, message=message, event_data={"step": step})
    if moved and reason == "handoff":
        try:
            dispatch(context.database, context.celery, context.settings, job_id)
        except Exception:
            log.exception("job %s: handed back, but its message could not be sent (a sweep will)", job_id)


def _finish(database: Database, job_id: str, attempt: int, outcome: Outcome) -> None:
    """Record how the run ended (succeeded, failed, or paused for a reason its user can fix), retrying while the
    database is unreachable."""
    for delay in (0, *FINISH_RETRY_DELAYS):
        time.sleep(delay)
        try:
            _record_end(database, job_id, attempt, outcome)
            return
        except DataError as error:
            # The database refused the result itself: record the refusal as the job's failure instead.
            log.exception("job %s: the database refused its result", job_id)
            outcome = Outcome.failed(f"the job ended but its result could not be stored: {error.orig}")
        except SQLAlchemyError:
            log.exception("job %s: could not record its end; retrying", job_id)
    log.error("job %s: gave up recording its end; its lease will expire and a sweep will requeue it", job_id)


def _shorten(error: str) -> str:
    """A job's error as a person reads it; the whole of a very long one stays in the traceback of its events."""
    if len(error) <= MAX_ERROR_CHARS:
        return error
    ending = " ... (cut short; see the job's events)"
    return error[: MAX_ERROR_CHARS - len(ending)] + ending


def _record_end(database: Database, job_id: str, attempt: int, outcome: Outcome) -> None:
    with database.session() as session:
        if outcome.pause_because is not None:
            # Nothing is lost and its user can fix why: a failure would lose what it trained (no resume from it).
            why = outcome.pause_because
            moved = transition(
                session, job_id, JobStatus.PAUSED, attempt=attempt, message=f"job paused: {why}", status_reason=why
            )
        elif outcome.succeeded:
            moved = transition(
                session,
                job_id,
                JobStatus.SUCCEEDED,
                attempt=attempt,
                summary=json_safe(outcome.summary) or None,
                message="job succeeded",
            )
        else:
            error = json_safe(_shorten(outcome.error or "training failed"))
            moved = transition(
                session, job_id, JobStatus.FAILED, attempt=attempt, error=error, message=f"job failed: {error}"
            )
            if moved:
                add_event(session, job_id, "error", error, {"traceback": outcome.traceback})
    if moved:
        ended = "succeeded" if outcome.succeeded else f"failed: {outcome.error}"
        log.info("job %s %s", job_id, f"paused: {outcome.pause_because}" if outcome.pause_because else ended)
        return
    # The claim lost the job while it ran (its writes were refused, so the child ended on its own).
    with database.session() as session:
        job = jobs.get_job(session, job_id)
    _note_lost(database, job_id, attempt, job.status if job else None)
