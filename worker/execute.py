"""What a worker does with a "run job X" message: claim the job, train it in a child process, record the end."""

from __future__ import annotations

import logging
from typing import Any

from shared import jobs
from shared.db import Database
from shared.settings import Settings
from shared.states import JobStatus, claim, transition
from worker.training_process import TrainingProcess

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def execute_job(settings: Settings, database: Database, worker_name: str, job_id: str) -> None:
    """Run job `job_id` if it is still queued; any other status means someone else owns it or it is over."""
    with database.session() as session:
        attempt = claim(session, job_id, worker_name)
        if attempt is None:
            job = jobs.get_job(session, job_id)
            status = job.status if job else "missing"
            log.info("job %s is %s, not queued: nothing to do", job_id, status)
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
            outcome = process.wait(POLL_SECONDS)
    except BaseException as error:
        # The worker itself is failing or being stopped: end the child, and leave no job `running` for nobody.
        if process is not None:
            process.kill()
        reason = "the worker was stopped" if isinstance(error, KeyboardInterrupt | SystemExit) else "the worker failed"
        _finish(
            database,
            job_id,
            attempt,
            {"succeeded": False, "error": f"{reason} while training: {error!r}", "traceback": None, "summary": {}},
        )
        raise
    _finish(database, job_id, attempt, outcome)


def _finish(database: Database, job_id: str, attempt: int, outcome: dict[str, Any]) -> None:
    with database.session() as session:
        if outcome["succeeded"]:
            moved = transition(
                session,
                job_id,
                JobStatus.SUCCEEDED,
                attempt=attempt,
                summary=outcome["summary"] or None,
                message="job succeeded",
            )
        else:
            error = outcome["error"] or "training failed"
            moved = transition(
                session, job_id, JobStatus.FAILED, attempt=attempt, error=error, message=f"job failed: {error}"
            )
            if moved:
                jobs.add_event(session, job_id, "error", error, {"traceback": outcome.get("traceback")})
    if moved:
        log.info("job %s %s", job_id, "succeeded" if outcome["succeeded"] else f"failed: {outcome['error']}")
    else:
        log.warning("job %s: attempt %d no longer owns the job; its result was not recorded", job_id, attempt)
