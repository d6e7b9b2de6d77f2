"""The entry point of a job's training child process (started from the worker's forkserver), and its link to
the worker that started it.

The child leads a process group of its own, so that the worker can end it and anything it started at once; it
writes its stdout/stderr to the job's `train.log`; it dies with the worker (a thread waits on the pipe from the
worker and ends the process group when the worker is gone); it reports each finished step to the worker (the
stall watchdog) and takes its requests to stop after a checkpoint (pause, hand-off); and on SIGUSR1 it writes
every thread's Python stack to its log, so that the worker can say where a stalled job is stuck.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from shared.settings import Settings


class WorkerLink:
    """The child's end of the pipe to its worker."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._send_lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.stop_reason: str | None = None

    def listen(self) -> None:
        """Take the worker's requests until the pipe closes; a closed pipe means the worker is gone."""
        try:
            while True:
                message = self._connection.recv()
                if message.get("cmd") == "stop":
                    self.stop_reason = message.get("reason")
                    self.stop_requested.set()
        except (EOFError, OSError):
            os.killpg(os.getpgid(0), signal.SIGKILL)

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._connection.send(message)

    def progress(self, step: int) -> None:
        """Tell the worker a training step finished."""
        self.send({"type": "progress", "step": step})


def _redirect_output(log_path: str) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def child_main(settings: Settings, job_id: str, attempt: int, connection: Connection, worker_gpus: int = 0) -> None:
    """Train job `job_id` as claim `attempt` on the worker's `worker_gpus` GPUs and send its Outcome to the
    worker."""
    os.setsid()
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
    link.send({"type": "outcome", **dataclasses.asdict(outcome)})
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave now: threads a reward function or a library left behind must not hold the exit (and the worker's
    # claim) for as long as they run.
    os._exit(0)
