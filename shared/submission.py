"""Submitting a job: store it, then ask a worker to run it."""

from __future__ import annotations

import logging

from celery import Celery

from shared import jobs
from shared.db import Database
from shared.models import Job
from shared.queue import send_run_job
from shared.settings import Settings
from shared.spec import JobSpec
from shared.states import JobStatus, transition

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The job was stored but its message could not be sent; the job is marked failed."""


def submit_job(database: Database, celery_app: Celery, settings: Settings, spec: JobSpec) -> Job:
    """Store a validated spec as a queued job and send it to the workers.

    The row is committed before the message is sent, so a worker that receives the message always finds the job.
    When the broker cannot be reached the job is marked failed (with the reason) and BrokerUnavailable is raised.
    """
    with database.session() as session:
        job = jobs.create_job(session, spec)
    try:
        send_run_job(celery_app, settings, job.id)
    except Exception as error:
        log.exception("could not send job %s to the broker", job.id)
        message = f"could not send the job to the broker ({type(error).__name__}: {error}); submit it again"
        with database.session() as session:
            transition(session, job.id, JobStatus.FAILED, error=message, message=message)
        raise BrokerUnavailable(message) from error
    return job
