"""Trainer callbacks that connect a training run to the service: progress and stop requests, and checkpoints."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from shared.store.checkpoints import forget_checkpoints, record_checkpoint
from shared.store.db import Database
from worker.metrics import MetricsWriter
from worker.protocol import WorkerLink


def directory_size(path: Path) -> int:
    """Bytes in the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def make_durable(path: Path) -> None:
    """Flush a saved checkpoint's files and folders to the disk, so that what is registered is whole even after a
    crash of the machine (and on a disk that other machines read)."""
    for item in [*path.rglob("*"), path, path.parent]:  # the parent: the checkpoint's own entry
        if item.is_symlink():
            continue
        descriptor = os.open(item, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        except OSError as error:
            # Some filesystems (FUSE mounts, for one) cannot fsync a folder; its files were flushed all the same.
            if not (error.errno == errno.EINVAL and item.is_dir()):
                raise
        finally:
            os.close(descriptor)


def agreed_by_all_ranks(decision: bool) -> bool:
    """Rank 0's `decision`, on every rank of a multi-process run (all must stop at the same step, or the others
    would wait forever in their next collective); the decision itself in a run of one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


class ControlCallback(TrainerCallback):
    """Tells the worker the run is alive (each step, evaluation batch and save), and on its request makes the trainer
    save a checkpoint at the end of the current step and stop; `stopped_at` is that step. In a multi-process run
    only rank 0 has the `link`, and every rank follows its decision."""

    def __init__(self, link: WorkerLink | None) -> None:
        self.link = link
        self.stopped_at: int | None = None

    def _progress(self, step: int) -> None:
        if self.link is not None:
            self.link.progress(step)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._progress(state.global_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._progress(state.global_step)
        requested = self.link is not None and self.link.stop_requested.is_set()
        if agreed_by_all_ranks(requested) and self.stopped_at is None:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._progress(state.global_step)  # evaluating is progress too

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._progress(state.global_step)


class CheckpointCallback(TrainerCallback):
    """Registers every checkpoint the trainer saves for this claim, then rotates this claim's old ones.

    The service rotates (`args.save_total_limit`), not the trainer: the trainer would delete old checkpoints before
    telling anyone, and a claim that lost its lease could delete the checkpoint the next claim resumes from. Here a
    claim deletes files only after the database has confirmed it still owns the job.

    Before registering a checkpoint it stores the metrics `writer` holds: the run resumed from that checkpoint does
    not log its steps again, so they must be in the database before anyone can resume from it.
    """

    def __init__(self, database: Database, job_id: str, attempt: int, keep: int | None, writer: MetricsWriter) -> None:
        self.database = database
        self.job_id = job_id
        self.attempt = attempt
        self.keep = keep
        self.writer = writer
        self.saved: list[tuple[int, Path]] = []

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        path = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        self.register(state.global_step, path)

    def register(self, step: int, path: Path) -> None:
        """Store the metrics logged so far, record a checkpoint this claim saved (fenced), then delete its
        checkpoints beyond `keep`."""
        self.writer.flush()
        make_durable(path)
        self.saved = [(s, p) for s, p in self.saved if s != step] + [(step, path)]
        retired = self.saved[: -self.keep] if self.keep else []
        with self.database.session() as session:
            record_checkpoint(
                session,
                self.job_id,
                self.attempt,
                name=path.name,
                step=step,
                path=str(path),
                size_bytes=directory_size(path),
            )
            forget_checkpoints(session, self.job_id, self.attempt, [p.name for _, p in retired])
        for _, old in retired:
            shutil.rmtree(old, ignore_errors=True)
        self.saved = self.saved[len(retired) :]

    def remove_partial(self, output_dir: Path) -> list[str]:
        """Delete the checkpoint folders of this run that were never registered (a save that failed halfway, for
        example on a full disk): only whole checkpoints stay. Returns their names."""
        registered = {path.name for _, path in self.saved}
        partial = [p for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name not in registered]
        for folder in partial:
            shutil.rmtree(folder, ignore_errors=True)
        return sorted(p.name for p in partial)

    def saved_at(self, step: int) -> bool:
        """Whether this claim saved a checkpoint at `step`."""
        return any(s == step for s, _ in self.saved)
