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
import re
import signal
import sysconfig
import time
from multiprocessing.connection import Connection
from pathlib import Path

from shared.settings import Settings
from worker.child import child_main
from worker.protocol import Outcome, Progress, StopRequest, receive, to_wire

PRELOAD = ["worker.runner"]
_context = multiprocessing.get_context("forkserver")
# How long a child gets to write its stack to its log when asked (SIGUSR1) where it is stuck.
STACK_DUMP_SECONDS = 1.0
# A faulthandler frame line: `  File "<reward_funcs[0]>", line 3 in slow`.
STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<function>.+)$')


def _warm() -> None:
    """Nothing: a first child, whose start waits until the forkserver has imported the training stack."""


def start_forkserver() -> None:
    """Start the forkserver and wait until it has imported the training stack (call once when a worker starts).

    Without the wait, the first job's child would take the seconds of those imports to start, during which its
    worker renews no lease.
    """
    _context.set_forkserver_preload(PRELOAD)
    multiprocessing.forkserver.ensure_running()
    first = _context.Process(target=_warm, name="grpo-forkserver-warm-up")
    first.start()
    first.join()


def describe_exit(exitcode: int | None) -> str:
    """`exit code 3`, or `killed by SIGKILL` for a negative code."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def innermost_frames(log_text: str, count: int = 3) -> list[str]:
    """The innermost frames of the last stack faulthandler wrote for the main thread, innermost first, one for each
    file the stack passes through, leaving out the standard library's (a wait in `selectors` or `threading` says
    less than the code that waits, and three frames of one module would hide the user's code that called it)."""
    block = log_text.rsplit("Current thread", 1)
    if len(block) < 2:
        return []
    frames: list[str] = []
    previous = None
    for line in block[1].splitlines()[1:]:
        match = FRAME.match(line)
        if not match:
            break
        if match["file"].startswith(STDLIB) or match["file"] == previous:
            continue
        previous = match["file"]
        frames.append(f"{match['function']} ({Path(match['file']).name}:{match['line']})")
    return frames[:count]


class TrainingProcess:
    """One job's training child."""

    def __init__(
        self, settings: Settings, job_id: str, attempt: int, worker_gpus: int = 0, secrets: dict[str, str] | None = None
    ) -> None:
        """Start the child; `secrets` (the job's, decrypted) join its environment, and the key that decrypts every
        project's secrets is not passed on to it."""
        self.job_id = job_id
        self.log_path = settings.job_dir(job_id) / "train.log"
        self._connection, child_end = _context.Pipe(duplex=True)
        self._process = _context.Process(
            target=child_main,
            args=(settings.model_copy(update={"secret_key": None}), job_id, attempt, child_end, worker_gpus, secrets),
            name=f"grpo-train-{job_id}",
        )
        self._process.start()
        child_end.close()
        self._outcome: Outcome | None = None
        self.last_step: int | None = None
        # When the run last showed life (a step, an evaluation batch, a save); None while it loads (downloads,
        # model loading), which the stall watchdog leaves alone.
        self.last_progress: float | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id (it leads its process group)."""
        return self._process.pid

    def wait(self, timeout: float) -> Outcome | None:
        """Take the child's messages for up to `timeout` seconds; its outcome once it has ended, else None."""
        connection: Connection = self._connection
        deadline = time.monotonic() + timeout
        while self._outcome is None:
            remaining = deadline - time.monotonic()
            if not connection.poll(max(remaining, 0)):
                if not self._process.is_alive():
                    self._outcome = self._died()
                break
            try:
                message = receive(connection)
            except EOFError:
                self._outcome = self._died()
                break
            if isinstance(message, Progress):
                self.last_step, self.last_progress = message.step, time.monotonic()
            elif isinstance(message, Outcome):
                self._outcome = message
        if self._outcome is not None:
            self._process.join(timeout=5)  # the child leaves right after its outcome (os._exit)
            connection.close()
        return self._outcome

    def _died(self) -> Outcome:
        self._process.join(timeout=5)
        how = describe_exit(self._process.exitcode)
        hint = " (out of memory?)" if self._process.exitcode == -signal.SIGKILL else ""
        return Outcome.failed(f"the training process ended without a result: {how}{hint}; see the job's train.log")

    def request_stop(self, reason: str) -> None:
        """Ask the child to save a checkpoint at the end of its current step and stop."""
        with contextlib.suppress(OSError):
            self._connection.send(to_wire(StopRequest(reason)))

    def where_stuck(self) -> list[str]:
        """Have the child write its stack to its log (SIGUSR1) and read where its main thread is."""
        if self._process.pid is None:
            return []
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._process.pid, signal.SIGUSR1)
        time.sleep(STACK_DUMP_SECONDS)
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 256_000))
                return innermost_frames(log.read().decode(errors="replace"))
        except OSError:
            return []

    def kill(self) -> None:
        """End the child and everything it started (its process group)."""
        if self._process.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.join(timeout=10)
        self._connection.close()
