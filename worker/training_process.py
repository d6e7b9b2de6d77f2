"""Starting, watching and ending a job's training child process (the worker side).

Children are forked from a forkserver that imported torch, transformers and TRL once when the worker started
(and never touched CUDA), so a child starts warm in milliseconds, and a crash, leak or CUDA state in one job
never reaches the worker or the next job.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from shared.settings import Settings
from worker.child import child_main

PRELOAD = ["worker.runner"]
_context = multiprocessing.get_context("forkserver")


def start_forkserver() -> None:
    """Start the forkserver now and have it import the training stack (call once when a worker starts)."""
    _context.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()


def describe_exit(exitcode: int | None) -> str:
    """`exit code 3`, or `killed by SIGKILL` for a negative code."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class TrainingProcess:
    """One job's training child."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self.job_id = job_id
        self._connection, child_end = _context.Pipe(duplex=True)
        self._process = _context.Process(
            target=child_main, args=(settings, job_id, child_end), name=f"grpo-train-{job_id}"
        )
        self._process.start()
        child_end.close()
        self._outcome: dict[str, Any] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The child's outcome once it has ended, or None while it still runs after `timeout` seconds."""
        connection: Connection = self._connection
        if self._outcome is not None:
            return self._outcome
        if connection.poll(timeout):
            try:
                self._outcome = connection.recv()
            except EOFError:
                self._outcome = self._died()
        elif not self._process.is_alive():
            self._outcome = self._died()
        if self._outcome is not None:
            self._process.join(timeout=30)
            connection.close()
        return self._outcome

    def _died(self) -> dict[str, Any]:
        self._process.join(timeout=5)
        how = describe_exit(self._process.exitcode)
        hint = " (out of memory?)" if self._process.exitcode == -signal.SIGKILL else ""
        return {
            "succeeded": False,
            "error": f"the training process ended without a result: {how}{hint}; see the job's train.log",
            "traceback": None,
            "summary": {},
        }

    def kill(self) -> None:
        """End the child and everything it started (its process group)."""
        if self._process.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.join(timeout=10)
        self._connection.close()
