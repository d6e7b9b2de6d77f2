"""How a training run's failures read: `TrainingFailed`, naming the stage that failed and why."""

from __future__ import annotations

from shared.spec.resources import DoesNotFit
from shared.store.states import LeaseLost
from worker.data import DatasetProblem
from worker.metrics import MetricsWriterFailed
from worker.model_paths import ModelNotFound
from worker.rewards import RewardFunctionError
from worker.vllm_server import VllmServerFailed


class TrainingFailed(RuntimeError):
    """Training could not run or finish; the message says at which stage and why."""


# Errors whose message already says what went wrong in words: a user reads it without the exception's type name.
READABLE_ERRORS = (
    TrainingFailed,
    RewardFunctionError,
    DatasetProblem,
    MetricsWriterFailed,
    ModelNotFound,
    LeaseLost,
    DoesNotFit,
    VllmServerFailed,
)


def stage_error(stage: str, error: BaseException) -> TrainingFailed:
    """`error`, raised while the run was at `stage`, as the TrainingFailed a user reads."""
    if isinstance(error, READABLE_ERRORS):
        return TrainingFailed(f"{stage}: {error}")
    return TrainingFailed(f"{stage}: {type(error).__name__}: {error}")
