"""Where a later claim of a job resumes: the newest checkpoint an earlier claim saved.

A registered checkpoint is whole (registered only once saved). When the newest one is not on this worker's disk
(workers with data dirs of their own), the job is paused saying so and how to fix it, rather than quietly starting
over from step 0 and throwing the work of the earlier attempts away.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from shared.store.checkpoints import training_checkpoints
from shared.store.db import Database
from shared.store.events import add_event
from shared.store.metrics import discard_metrics_after
from shared.store.models import Checkpoint


class CheckpointOutOfReach(RuntimeError):
    """The newest registered checkpoint's files are not where this worker can read them."""


def _out_of_reach(checkpoint: Checkpoint) -> str:
    return (
        f"{checkpoint.name} (step {checkpoint.step}, saved by attempt {checkpoint.attempt}) is registered but its "
        f"files are not on this worker ({checkpoint.path}): the workers do not share GRPO_DATA_DIR. Mount one data "
        "dir on every worker (and the API), then `grpo resume` the job (paused meanwhile; it was not restarted "
        "from step 0, which would throw away the steps already trained)"
    )


def resume_point(database: Database, job_id: str, attempt: int, main: bool = True) -> str | None:
    """The newest checkpoint an earlier attempt saved, with the metrics past it discarded (the resumed run logs them
    again) by the main process. A later attempt with no checkpoint starts over; one whose newest checkpoint this
    worker cannot read raises CheckpointOutOfReach."""
    if attempt == 1:
        return None
    with database.session() as session:
        checkpoint = next(iter(training_checkpoints(session, job_id)), None)
    if checkpoint is not None and not Path(checkpoint.path).is_dir():
        message = _out_of_reach(checkpoint)
        if main:
            # The pause says it too: an unreachable database here must not turn the pause into a failure.
            with contextlib.suppress(SQLAlchemyError), database.session() as session:
                add_event(session, job_id, "error", message, {"checkpoint": checkpoint.name, "attempt": attempt})
        raise CheckpointOutOfReach(message)
    with database.session() as session:
        if not main:
            return checkpoint.path if checkpoint else None
        step = checkpoint.step if checkpoint else 0
        discarded = discard_metrics_after(session, job_id, attempt, step)
        where = (
            f"{checkpoint.name} (saved by attempt {checkpoint.attempt})" if checkpoint else "the start (no checkpoint)"
        )
        add_event(
            session,
            job_id,
            "info",
            f"attempt {attempt} resumes from {where}; {discarded} metric point(s) past step {step} will be "
            "logged again",
            {"checkpoint": checkpoint.name if checkpoint else None, "step": step, "attempt": attempt},
        )
        return checkpoint.path if checkpoint else None
