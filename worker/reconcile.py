"""The sweep every worker runs in the background: the database is the truth, broker messages only nudge.

- A running job whose lease expired lost its worker (killed, crashed, partitioned): it is requeued to resume from
  its latest checkpoint, or failed once it has lost `max_attempts` workers.
- A queued job whose message an idle worker never received lost its message (Redis restarted without
  persistence, FLUSHALL, a worker killed holding it): it is sent again. Only an idle worker resends, because an
  idle worker would have received a message still in the queue; a duplicate is harmless anyway (claims decide).
- A queued job held by its project's limits is sent again once a slot is free (shared/quotas.py).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from shared import quotas
from shared.queue import dispatch
from shared.spec.resources import gpu_count
from shared.store import jobs, workers
from shared.store.events import add_event
from shared.store.models import utcnow
from shared.store.states import JobStatus, expired_leases, transition
from worker.execute import WorkerContext

log = logging.getLogger(__name__)

# How long a worker must have been idle before it takes a queued job's silence for a lost message.
IDLE_GRACE_SECONDS = 2.0


def requeue_expired(context: WorkerContext) -> None:
    """Requeue (or fail, past max_attempts) the running jobs whose worker stopped renewing its lease.

    A job whose user asked for a pause is paused instead: it resumes from its latest checkpoint when asked.
    """
    now = utcnow()
    with context.database.session() as session:
        expired = expired_leases(session, now)
    for lease in expired:
        lost = lease.lost_attempts + 1
        lost_worker = f"attempt {lease.attempt} on {lease.worker} stopped renewing its lease"
        with context.database.session() as session:
            # Each move also requires the lease to be expired still: a slow worker that renewed it keeps its job.
            if lost >= context.settings.max_attempts:
                error = (
                    f"gave up after losing its worker {lost} times "
                    f"(GRPO_MAX_ATTEMPTS={context.settings.max_attempts}): {lost_worker}"
                )
                transition(
                    session,
                    lease.job_id,
                    JobStatus.FAILED,
                    attempt=lease.attempt,
                    lease_expired_before=now,
                    error=error,
                    lost_attempts=lost,
                    message=f"job failed: {error}",
                )
                continue
            target = JobStatus.PAUSED if lease.requested_action == "pause" else JobStatus.QUEUED
            after = "paused, as requested" if target == JobStatus.PAUSED else "requeued"
            moved = transition(
                session,
                lease.job_id,
                target,
                attempt=lease.attempt,
                lease_expired_before=now,
                lost_attempts=lost,
                message=f"the lease of attempt {lease.attempt} on {lease.worker} expired (worker lost): {after}, "
                "to resume from its latest checkpoint",
                event_data={"attempt": lease.attempt, "worker": lease.worker, "lost_attempts": lost},
            )
        if moved and target == JobStatus.QUEUED:
            dispatch(context.database, context.celery, context.settings, lease.job_id)


def resend_lost_messages(context: WorkerContext) -> None:
    """From an idle worker: send again the queued jobs whose message it should have received long ago."""
    idle_since = context.idle_since
    if idle_since is None or time.monotonic() - idle_since < IDLE_GRACE_SECONDS:
        return
    with context.database.session() as session:
        sent_before = utcnow() - timedelta(seconds=context.settings.resend_after_seconds)
        # Only the jobs whose queue this worker takes: it says nothing of the others' messages.
        lost = jobs.undispatched_jobs(session, sent_before, gpu_count(context.devices))
    for job_id in lost:
        log.info("job %s: queued but never received; sending its message again", job_id)
        dispatch(context.database, context.celery, context.settings, job_id)
        with context.database.session() as session:
            add_event(session, job_id, "info", "message sent again: the broker had lost it")


def release_held_jobs(context: WorkerContext) -> None:
    """Send again the jobs held by their project's limits that fit a free slot now (a job ended where no worker saw
    it end, or one submitted before them was cancelled), if none was sent in the last sweep period."""
    settings = context.settings
    for job_id in quotas.release_all_held(context.database, context.celery, settings, settings.sweep_seconds):
        log.info("job %s: its project has a free slot; sent to the workers", job_id)


def sweep(context: WorkerContext) -> None:
    """One pass of the three checks, and this worker's heartbeat in the registry."""
    with context.database.session() as session:
        workers.heartbeat(session, context.name, context.current_job)
    requeue_expired(context)
    resend_lost_messages(context)
    release_held_jobs(context)


class Reconciler(threading.Thread):
    """Runs `sweep` now and every `sweep_seconds` until the worker stops."""

    def __init__(self, context: WorkerContext) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.context = context
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                sweep(self.context)
            except Exception:
                log.exception("reconciliation sweep failed; trying again in %s s", self.context.settings.sweep_seconds)
            self.done.wait(self.context.settings.sweep_seconds)
