"""Where a later claim of a job resumes: the newest checkpoint an earlier claim saved that is still on disk."""

from __future__ import annotations

from pathlib import Path

from shared.store.checkpoints import training_checkpoints
from shared.store.db import Database
from shared.store.events import add_event
from shared.store.metrics import discard_metrics_after


def resume_point(database: Database, job_id: str, attempt: int, main: bool = True) -> str | None:
    """The newest checkpoint an earlier attempt saved that is still on disk, with the metrics past it discarded
    (the resumed run logs them again) by the main process. A later attempt with no checkpoint starts over."""
    if attempt == 1:
        return None
    with database.session() as session:
        checkpoint = next((c for c in training_checkpoints(session, job_id) if Path(c.path).is_dir()), None)
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
