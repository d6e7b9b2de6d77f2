"""The worker's Celery app: the shared app with the `run_job` task registered on it."""

from __future__ import annotations

import os
import socket
import threading

from celery import Celery
from celery.signals import worker_shutting_down

from shared.db import Database
from shared.queue import RUN_JOB_TASK, make_celery
from shared.settings import Settings
from worker.execute import execute_job


def worker_name() -> str:
    """A name unique to this worker process (several may run on one host)."""
    return f"grpo-worker-{os.getpid()}@{socket.gethostname()}"


def create_worker_app(settings: Settings) -> Celery:
    """The Celery app with `run_job` bound to these settings and one database connection pool."""
    app = make_celery(settings)
    database = Database.from_settings(settings)
    name = worker_name()
    stopping = threading.Event()

    @worker_shutting_down.connect(weak=False)
    def _on_shutdown(**_kwargs: object) -> None:
        # Celery's warm shutdown would wait for the running job to end, however long it trains.
        stopping.set()

    @app.task(name=RUN_JOB_TASK)
    def run_job(job_id: str) -> None:
        """Claim job `job_id` in the database and train it; a job that is not queued is left alone."""
        execute_job(settings, database, name, job_id, stopping)

    return app


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Run a worker in the foreground: one job at a time (solo pool), each trained in its own child process."""
    from worker.training_process import start_forkserver

    start_forkserver()
    app = create_worker_app(settings)
    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--prefetch-multiplier=1",
            f"--queues={settings.queue}",
            f"--hostname={worker_name()}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
