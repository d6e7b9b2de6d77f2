"""The entry point of a job's training child process (started from the worker's forkserver).

The child leads a process group of its own, so that the worker can end it and anything it started at once; it
writes its stdout/stderr to the job's `train.log`; and it dies with the worker: a thread waits on the pipe from
the worker and ends the process group when the worker is gone.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

from shared.settings import Settings


def _die_with_parent(connection: Connection) -> None:
    try:
        while True:
            connection.recv()
    except (EOFError, OSError):
        os.killpg(os.getpgid(0), signal.SIGKILL)


def _redirect_output(log_path: str) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def child_main(settings: Settings, job_id: str, connection: Connection) -> None:
    """Train job `job_id` and send its Outcome (as a dict) to the worker."""
    os.setsid()
    job_dir = settings.job_dir(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    _redirect_output(str(job_dir / "train.log"))
    threading.Thread(target=_die_with_parent, args=(connection,), name="parent-watch", daemon=True).start()

    from shared.db import Database
    from worker.runner import train  # preloaded by the forkserver: no import cost here

    database = Database.from_settings(settings)
    try:
        outcome = train(settings, database, job_id)
    finally:
        database.dispose()
    connection.send(dataclasses.asdict(outcome))
