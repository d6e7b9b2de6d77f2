"""The entry point of a job's training child process (started from the worker's forkserver).

The child leads a process group of its own, so that the worker can end it and anything it started at once; it
writes its stdout/stderr to the job's `train.log`; it dies with the worker (a thread waits on the pipe from the
worker and ends the process group when the worker is gone); it reports each finished step to the worker (the
stall watchdog) and takes its requests to stop after a checkpoint (pause, hand-off), over the link in
worker/protocol.py; and on SIGUSR1 it writes every thread's Python stack to its log, so that the worker can say
where a stalled job is stuck.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

from shared.access.secrets import KEY_SETTING
from shared.settings import Settings
from worker.protocol import WorkerLink


def _redirect_output(log_path: str) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _enter_secrets(secrets: dict[str, str]) -> None:
    """The job's secrets join this process's environment (its ranks and its vLLM server inherit it; its reward
    sandbox starts with a clean one), and the key that decrypts every project's secrets leaves it."""
    os.environ.pop(KEY_SETTING, None)
    os.environ.update(secrets)


def child_main(
    settings: Settings,
    job_id: str,
    attempt: int,
    connection: Connection,
    worker_gpus: int = 0,
    secrets: dict[str, str] | None = None,
) -> None:
    """Train job `job_id` as claim `attempt` on the worker's `worker_gpus` GPUs, with the job's `secrets` in its
    environment, and send its Outcome to the worker."""
    os.setsid()
    _enter_secrets(secrets or {})
    job_dir = settings.job_dir(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    _redirect_output(str(job_dir / "train.log"))
    print(f"--- attempt {attempt} (pid {os.getpid()}) ---", flush=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    link = WorkerLink(connection)
    threading.Thread(target=link.listen, name="worker-link", daemon=True).start()

    from shared.store.db import Database
    from worker.runner import train  # preloaded by the forkserver: no import cost here

    database = Database.from_settings(settings)
    try:
        outcome = train(settings, database, job_id, attempt, link, worker_gpus)
    finally:
        database.dispose()
    link.send(outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave now: threads a reward function or a library left behind must not hold the exit (and the worker's
    # claim) for as long as they run.
    os._exit(0)
