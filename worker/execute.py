"""What a worker does with a "run job X" message: claim the job, train it in a child process, record the end."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.exc import DataError, SQLAlchemyError

from shared import jobs
from shared.db import Database
from shared.settings import Settings
from shared.states import JobStatus, claim, transition
from worker.training_process import TrainingProcess

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
MAX_ERROR_CHARS = 2000
# Waits between tries of recording a job's end while the database is unreachable (about a minute in all).
FINISH_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


def failure(error: str, traceback: str | None = None) -> dict[str, Any]:
    """An outcome of a run that failed."""
    return {"succeeded": False, "error": error, "traceback": traceback, "summary": {}}


def execute_job(
    settings: Settings, database: Database, worker_name: str, job_id: str, stopping: threading.Event
) -> None:
    """Run job `job_id` if it is still queued; any other status means someone else owns it or it is over.

    `stopping` is set when the worker is asked to shut down: the training child is ended and the job is
    recorded as failed, so that it is not left `running` for a worker that is gone.
    """
    with database.session() as session:
        attempt = claim(session, job_id, worker_name)
        if attempt is None:
            job = jobs.get_job(session, job_id)
            log.info("job %s is %s, not queued: nothing to do", job_id, job.status if job else "missing")
            return
    log.info("job %s claimed (attempt %d)", job_id, attempt)

    process: TrainingProcess | None = None
    try:
        process = TrainingProcess(settings, job_id)
        with database.session() as session:
            jobs.add_event(
                session,
                job_id,
                "info",
                f"training process {process.pid} started",
                {"pid": process.pid, "log": str(settings.job_dir(job_id) / "train.log")},
            )
        outcome = None
        while outcome is None:
            if stopping.is_set():
                process.kill()
                outcome = failure("the worker was stopped while training: submit the job again")
                break
            outcome = process.wait(POLL_SECONDS)
    except BaseException as error:
        # The worker itself is failing: end the child, and leave no job `running` for nobody.
        if process is not None:
            process.kill()
        _finish(database, job_id, attempt, failure(f"the worker failed while training: {error!r}"))
        raise
    _finish(database, job_id, attempt, outcome)


def _finish(database: Database, job_id: str, attempt: int, outcome: dict[str, Any]) -> None:
    """Record how the run ended, retrying while the database is unreachable."""
    for delay in (0, *FINISH_RETRY_DELAYS):
        time.sleep(delay)
        try:
            _record_end(database, job_id, attempt, outcome)
            return
        except DataError as error:
            # The database refused the result itself: record the refusal as the job's failure instead.
            log.exception("job %s: the database refused its result", job_id)
            outcome = failure(f"the job ended but its result could not be stored: {error.orig}")
        except SQLAlchemyError:
            log.exception("job %s: could not record its end; retrying", job_id)
    log.error("job %s: gave up recording its end; it stays running until it is reconciled", job_id)


def _shorten(error: str) -> str:
    """A job's error as a person reads it; the whole of a very long one stays in the traceback of its events."""
    if len(error) <= MAX_ERROR_CHARS:
        return error
    ending = " ... (cut short; see the job's events)"
    return error[: MAX_ERROR_CHARS - len(ending)] + ending


def _record_end(database: Database, job_id: str, attempt: int, outcome: dict[str, Any]) -> None:
    with database.session() as session:
        if outcome["succeeded"]:
            moved = transition(
                session,
                job_id,
                JobStatus.SUCCEEDED,
                attempt=attempt,
                summary=jobs.json_safe(outcome["summary"]) or None,
                message="job succeeded",
            )
        else:
            error = jobs.json_safe(_shorten(outcome["error"] or "training failed"))
            moved = transition(
                session, job_id, JobStatus.FAILED, attempt=attempt, error=error, message=f"job failed: {error}"
            )
            if moved:
                jobs.add_event(session, job_id, "error", error, {"traceback": outcome.get("traceback")})
    if moved:
        log.info("job %s %s", job_id, "succeeded" if outcome["succeeded"] else f"failed: {outcome['error']}")
    else:
        log.warning("job %s: attempt %d no longer owns the job; its result was not recorded", job_id, attempt)
