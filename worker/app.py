"""The worker's Celery app: the shared app with the `run_job` task registered on it, and its reconciler."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from shared.access.secrets import KEY_SETTING
from shared.queue import RUN_JOB_TASK, make_celery
from shared.settings import Settings
from shared.spec.resources import gpu_count, queues_for_worker
from shared.store import workers
from shared.store.db import Database
from worker.devices import detect_devices
from worker.execute import WorkerContext, execute_job
from worker.reconcile import Reconciler

log = logging.getLogger(__name__)


def worker_name() -> str:
    """A name unique to this worker process (several may run on one host)."""
    return f"grpo-worker-{os.getpid()}@{socket.gethostname()}"


def create_worker_app(settings: Settings, devices: dict[str, Any] | None = None) -> tuple[Celery, WorkerContext]:
    """The Celery app with `run_job` bound to a worker context (settings, one database pool, a name, the devices
    it registers with)."""
    app = make_celery(settings)
    devices = devices if devices is not None else {"cuda_devices": 0, "cpus": os.cpu_count(), "device": settings.device}
    context = WorkerContext(settings, Database.from_settings(settings), app, worker_name(), devices=devices)
    reconciler = Reconciler(context)

    @worker_ready.connect(weak=False)
    def _on_ready(**_kwargs: object) -> None:
        with context.database.session() as session:
            workers.register(session, context.name, devices)
        reconciler.start()

    @worker_shutting_down.connect(weak=False)
    def _on_shutdown(**_kwargs: object) -> None:
        # Celery's warm shutdown would wait for the running job to end, however long it trains: instead the job
        # saves a checkpoint and is handed back to the queue.
        context.stopping.set()
        reconciler.done.set()
        try:
            with context.database.session() as session:
                workers.sign_off(session, context.name)
        except Exception:  # an unreachable database must not stop the worker from stopping
            log.warning("could not record that %s stopped", context.name, exc_info=True)

    @app.task(name=RUN_JOB_TASK)
    def run_job(job_id: str) -> None:
        """Claim job `job_id` in the database and train it; a job that is not queued is left alone."""
        execute_job(context, job_id)

    return app, context


def worker_argv(settings: Settings, hostname: str, loglevel: str = "INFO", gpu_count: int = 0) -> list[str]:
    """The `celery worker` command line a grpo worker runs: one job at a time (the solo pool, prefetch 1), from
    the queues of every job its `gpu_count` GPUs can hold."""
    return [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "--prefetch-multiplier=1",
        f"--queues={','.join(queues_for_worker(settings.queue, gpu_count))}",
        f"--hostname={hostname}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Run a worker in the foreground: one job at a time (solo pool), each trained in its own child process."""
    from worker.training_process import start_forkserver

    # The key to every project's secrets stays in `settings`: no process the worker starts (its forkserver, and
    # from it each job's training process) has it in its environment, where /proc/<pid>/environ would show it.
    os.environ.pop(KEY_SETTING, None)
    devices = detect_devices(settings)
    start_forkserver()
    app, context = create_worker_app(settings, devices)
    app.worker_main(worker_argv(settings, context.name, loglevel, gpu_count(devices)))
