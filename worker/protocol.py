"""What a job's training child and its worker say to each other over their pipe, and the child's end of it.

The same messages pass between a multi-process job's rank 0 and its launcher, which relays them (see
worker/distributed.py). The child sends `Progress` after every step (the worker's stall watchdog) and one `Outcome`
at the end; the worker sends `StopRequest` (pause, hand-off). On the pipe they are plain dicts, written by
`to_wire` and read back by `from_wire`: nothing else in the worker reads a message's keys.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class Progress:
    """A training step (or evaluation batch, or save) finished: the run is alive, at `step`."""

    step: int


@dataclass(frozen=True)
class StopRequest:
    """The worker asks the run to save a checkpoint at the end of its current step and stop."""

    reason: str | None  # "pause" or "handoff"


@dataclass
class Outcome:
    """How a training run ended, as the child reports it to the worker."""

    succeeded: bool
    error: str | None = None
    traceback: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # TRL's end-of-training log
    # Stopped on the worker's request (pause, hand-off) after saving a checkpoint at this step.
    stopped_at_step: int | None = None
    # The run could not start for a reason its user can fix, with nothing lost: the job is paused, saying why.
    pause_because: str | None = None

    @classmethod
    def failed(cls, error: str, traceback: str | None = None) -> Outcome:
        """The outcome of a run that failed with `error` (what the user reads)."""
        return cls(False, error, traceback)


Message = Progress | StopRequest | Outcome


def to_wire(message: Message) -> dict[str, Any]:
    """The dict that carries `message` over the pipe."""
    if isinstance(message, Progress):
        return {"type": "progress", "step": message.step}
    if isinstance(message, StopRequest):
        return {"cmd": "stop", "reason": message.reason}
    return {"type": "outcome", **dataclasses.asdict(message)}


def from_wire(data: dict[str, Any]) -> Message | None:
    """The message a dict from the pipe carries; None for one this side does not know (it is ignored)."""
    if data.get("cmd") == "stop":
        return StopRequest(data.get("reason"))
    if data.get("type") == "progress":
        return Progress(data["step"])
    if data.get("type") == "outcome":
        return Outcome(
            succeeded=data["succeeded"],
            error=data.get("error"),
            traceback=data.get("traceback"),
            summary=data.get("summary", {}),
            stopped_at_step=data.get("stopped_at_step"),
            pause_because=data.get("pause_because"),
        )
    return None


def receive(connection: Connection) -> Message | None:
    """The next message on `connection` (waits for it); raises EOFError once the other end has closed."""
    data: dict[str, Any] = connection.recv()
    return from_wire(data)


class WorkerLink:
    """The child's end of the pipe to its worker (or rank 0's end of its link to the launcher)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # The training loop (progress) and the end of the run (outcome) may send from different threads.
        self._send_lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.stop_reason: str | None = None

    def listen(self) -> None:
        """Take the worker's requests until the pipe closes; a closed pipe means the worker is gone."""
        try:
            while True:
                message = receive(self._connection)
                if isinstance(message, StopRequest):
                    self.stop_reason = message.reason
                    self.stop_requested.set()
        except (EOFError, OSError):
            # Nobody is left to report to or to hold the job's lease: end the run and all it started.
            os.killpg(os.getpgid(0), signal.SIGKILL)

    def send(self, message: Message) -> None:
        """Send `message` to the worker."""
        with self._send_lock:
            self._connection.send(to_wire(message))

    def progress(self, step: int) -> None:
        """Tell the worker a training step finished."""
        self.send(Progress(step))
