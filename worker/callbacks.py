"""Trainer callbacks that connect a training run to the service: progress and stop requests, and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from shared import jobs
from shared.db import Database
from worker.child import WorkerLink


def directory_size(path: Path) -> int:
    """Bytes in the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ControlCallback(TrainerCallback):
    """Reports each finished step to the worker, and on its request saves a checkpoint and stops."""

    def __init__(self, link: WorkerLink) -> None:
        self.link = link

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self.link.progress(state.global_step)
        if self.link.stop_requested.is_set():
            control.should_save = True
            control.should_training_stop = True


class CheckpointCallback(TrainerCallback):
    """Registers every checkpoint the trainer saves (and forgets the ones it rotates out) for this claim."""

    def __init__(self, database: Database, job_id: str, attempt: int) -> None:
        self.database = database
        self.job_id = job_id
        self.attempt = attempt
        self.saved: dict[str, Path] = {}

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        path = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        name = path.name
        self.saved[name] = path
        gone = [other for other, other_path in self.saved.items() if not other_path.exists()]
        for other in gone:
            del self.saved[other]
        with self.database.session() as session:
            jobs.record_checkpoint(
                session,
                self.job_id,
                self.attempt,
                name=name,
                step=state.global_step,
                path=str(path),
                size_bytes=directory_size(path),
            )
            jobs.forget_checkpoints(session, self.job_id, self.attempt, gone)
