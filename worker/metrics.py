"""Streaming what the trainer logs into the database as it happens.

`MetricsCallback.on_log` hands each log to a `MetricsWriter`, whose background thread writes batches every
`metrics_flush_interval` seconds: the training loop never waits for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.exc import DBAPIError
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from shared.store import jobs
from shared.store.db import Database
from shared.store.metrics import MetricRecord, record_metrics
from shared.store.models import utcnow
from shared.store.states import LeaseLost
from worker.samples import capture_samples

log = logging.getLogger(__name__)

# Keys of TRL's end-of-training log; it is the job's summary, not a step's metrics.
SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"})


def describe_database_error(error: BaseException) -> str:
    """The driver's own message, without the statement and parameters SQLAlchemy adds (they can be megabytes)."""
    if isinstance(error, LeaseLost):
        return str(error)
    if isinstance(error, DBAPIError) and error.orig is not None:
        return f"{type(error.orig).__name__}: {error.orig}"
    return f"{type(error).__name__}: {error}"


class MetricsWriterFailed(RuntimeError):
    """The database refused the metrics for longer than the writer retries."""


class MetricsWriter:
    """Buffers logged steps and writes them in batches from a background thread."""

    def __init__(
        self,
        database: Database,
        job_id: str,
        attempt: int,
        flush_interval: float,
        retry_for: float = 30.0,
        keep_sample_steps: int = 200,
    ) -> None:
        self._database = database
        self._job_id = job_id
        self._attempt = attempt
        self._flush_interval = flush_interval
        self._retry_for = retry_for
        self._keep_sample_steps = keep_sample_steps
        self._pending: dict[int, MetricRecord] = {}
        # The newest step seen: a later log for the same step (eval metrics) is merged into it.
        self._latest: MetricRecord | None = None
        self._condition = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        # Callers waiting in flush(), and whether the thread holds a batch it has not written yet.
        self._flushing = 0
        self._in_flight = False
        self._thread = threading.Thread(target=self._run, name=f"metrics-{job_id}", daemon=True)
        self._thread.start()

    def add(
        self, step: int, epoch: float | None, metrics: dict[str, Any], samples: list[dict[str, Any]] | None = None
    ) -> None:
        """Queue what was logged at `step` (and a few of its completions); raises if the writer has given up on
        the database."""
        if self._error is not None:
            raise MetricsWriterFailed(
                f"could not store metrics: {describe_database_error(self._error)}"
            ) from self._error
        with self._condition:
            if self._latest is not None and self._latest.step == step:
                record = MetricRecord(
                    step,
                    epoch if epoch is not None else self._latest.epoch,
                    {**self._latest.metrics, **metrics},
                    utcnow(),
                    samples or self._latest.samples,
                )
            else:
                record = MetricRecord(step, epoch, dict(metrics), utcnow(), samples)
            self._latest = record
            self._pending[step] = record
            self._condition.notify_all()

    def close(self) -> None:
        """Write everything still buffered and stop the thread; raises if some of it could not be written."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join()
        if self._error is not None:
            raise MetricsWriterFailed(
                f"could not store metrics: {describe_database_error(self._error)}"
            ) from self._error

    def flush(self) -> None:
        """Write everything logged so far now, and wait until it is stored; raises if it could not be.

        Called before a checkpoint is registered (CheckpointCallback.register): a claim that dies right after must not
        leave a checkpoint whose steps' metrics were never stored, since the run resumed from it does not log those
        steps again.
        """
        with self._condition:
            self._flushing += 1
            self._condition.notify_all()
            try:
                while (self._pending or self._in_flight) and self._error is None and self._thread.is_alive():
                    self._condition.wait(timeout=1.0)
            finally:
                self._flushing -= 1
        if self._error is not None:
            raise MetricsWriterFailed(
                f"could not store metrics: {describe_database_error(self._error)}"
            ) from self._error

    def _take(self) -> list[MetricRecord] | None:
        with self._condition:
            while not self._pending and not self._closing:
                self._condition.wait()
            if not self._pending:
                return None  # closing, nothing left
            # Let the logs of the next flush interval gather into one write.
            deadline = time.monotonic() + self._flush_interval
            while not self._closing and not self._flushing and (remaining := deadline - time.monotonic()) > 0:
                self._condition.wait(timeout=remaining)
            batch = sorted(self._pending.values(), key=lambda r: r.step)
            self._pending.clear()
            self._in_flight = True
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._write(batch)
            except BaseException as error:
                self._error = error
                return
            finally:
                with self._condition:
                    self._in_flight = False
                    self._condition.notify_all()

    def _write(self, batch: list[MetricRecord]) -> None:
        deadline = time.monotonic() + self._retry_for
        delay = 0.1
        while True:
            try:
                with self._database.session() as session:
                    record_metrics(session, self._job_id, self._attempt, batch, self._keep_sample_steps)
                return
            except LeaseLost:
                raise  # this claim no longer owns the job: retrying cannot help
            except Exception as error:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("writing metrics of %s failed (%s); retrying in %.1fs", self._job_id, error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


class MetricsCallback(TrainerCallback):
    """Sends every `on_log` (with a few of the step's completions) to the writer, and records the plan (total
    steps) and TRL's final summary."""

    def __init__(
        self,
        writer: MetricsWriter,
        database: Database,
        job_id: str,
        attempt: int,
        samples_per_step: int = 0,
        sample_max_chars: int = 4000,
        sample_interval: float = 0.0,
    ) -> None:
        self.writer = writer
        self.database = database
        self.job_id = job_id
        self.attempt = attempt
        self.summary: dict[str, Any] = {}
        self.samples_per_step = samples_per_step
        self.sample_max_chars = sample_max_chars
        self.sample_interval = sample_interval
        self._last_sampled = float("-inf")
        # The trainer whose gathered completions are sampled (set once it is built).
        self.trainer: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            with self.database.session() as session:
                jobs.set_job_fields(session, self.job_id, self.attempt, total_steps=state.max_steps)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if SUMMARY_KEYS & logs.keys():
            self.summary.update(logs)
            return
        metrics = dict(logs)
        epoch = metrics.pop("epoch", None)
        self.writer.add(state.global_step, epoch, metrics, self._samples(state, metrics) or None)

    def _samples(self, state: TrainerState, metrics: dict[str, Any]) -> list[dict[str, Any]] | None:
        """A few of the step's completions: at most one logged step every `sample_interval` seconds, and the last
        step. Storing them costs the writer (and the CPU training shares) some milliseconds: bounded in time, that
        cost stays out of fast runs' way, and a run of seconds per step has every step sampled."""
        if self.trainer is None or any(key.startswith("eval_") for key in metrics):
            return None  # an evaluation's log has no new completions
        now = time.monotonic()
        last_step = state.max_steps > 0 and state.global_step >= state.max_steps
        if now - self._last_sampled < self.sample_interval and not last_step:
            return None
        self._last_sampled = now
        return capture_samples(self.trainer, self.samples_per_step, self.sample_max_chars)
