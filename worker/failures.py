"""How a training run's failures read: `TrainingFailed`, naming the stage that failed and why."""

from __future__ import annotations

import errno

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


_TOOL_TEMPLATE_FIX = (
    "the job has tools, so the model's chat template must render tool calls and TRL must know how to parse them: "
    "train a model whose template supports tools (Qwen2.5, Qwen3, Llama 3.1+, ...; `grpo tiny-model DIR "
    "--tool-calling` builds a tiny one)"
)
# What TRL says at run time that only the worker can know, and the fix to add to it (by a part of TRL's message).
DISK_FULL = (
    "the worker's disk is full: free space under its GRPO_DATA_DIR, or checkpoint less (a larger args.save_steps, a "
    "smaller args.save_total_limit); a checkpoint left half saved is removed"
)
FIXES = {
    "No space left on device": DISK_FULL,
    "does not support tool calling": _TOOL_TEMPLATE_FIX,
    "failed to add response schema": _TOOL_TEMPLATE_FIX,
}


def _disk_full(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        current = current.__cause__ or current.__context__
    return False


def stage_error(stage: str, error: BaseException) -> TrainingFailed:
    """`error`, raised while the run was at `stage`, as the TrainingFailed a user reads."""
    if isinstance(error, READABLE_ERRORS):
        return TrainingFailed(f"{stage}: {error}")
    fix = next((fix for words, fix in FIXES.items() if words in str(error)), None)
    if fix is None and _disk_full(error):  # torch.save says "file write failed", its cause says ENOSPC
        fix = DISK_FULL
    if fix is not None:
        return TrainingFailed(f"{stage}: {type(error).__name__}: {error} ({fix})")
    return TrainingFailed(f"{stage}: {type(error).__name__}: {error}")
