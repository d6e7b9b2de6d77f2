"""/v1/rewards/preview: score completions with a spec's reward functions before spending GPU time on a job."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter

from api.auth import Writer
from api.deps import ServicesDep
from api.errors import ApiError
from api.ratelimit import RATE_LIMITED_RESPONSE, Action, rate_limited
from api.schemas import ErrorBody, PreviewOut, PreviewRequest, RewardScoresOut
from sandbox.client import SandboxLimits
from sandbox.preview import PreviewInputs, preview_rewards
from shared.spec.job import check_reward_sources
from shared.spec.policy import SpecPolicy, check_reward_models
from shared.spec.problems import Problem, SpecError

router = APIRouter(prefix="/v1/rewards", tags=["rewards"])
_running: dict[int, threading.BoundedSemaphore] = {}
_running_lock = threading.Lock()


def _slots(limit: int) -> threading.BoundedSemaphore:
    with _running_lock:
        return _running.setdefault(limit, threading.BoundedSemaphore(limit))


@contextmanager
def preview_slot(limit: int) -> Iterator[None]:
    """One of the server's `limit` preview slots (rewards and tools share them), or a 429 when all are taken."""
    slots = _slots(limit)
    if not slots.acquire(blocking=False):
        raise ApiError(
            429,
            "too_many_previews",
            f"{limit} previews are running on this server: try again in a moment",
            headers={"Retry-After": "1"},
        )
    try:
        yield
    finally:
        slots.release()


def _length_problems(request: PreviewRequest) -> list[Problem]:
    count = len(request.completions)
    sized = {"prompts": request.prompts, "completion_ids": request.completion_ids}
    sized.update({f"columns.{name}": values for name, values in request.columns.items()})
    problems = [
        Problem(field, f"{field} has {len(values)} entries for {count} completions: give one per completion")
        for field, values in sized.items()
        if values is not None and len(values) != count
    ]
    if request.reward_weights is not None and len(request.reward_weights) != len(request.reward_funcs):
        problems.append(
            Problem(
                "reward_weights",
                f"reward_weights has {len(request.reward_weights)} weights for {len(request.reward_funcs)} reward "
                "functions: give one per reward function",
            )
        )
    return problems


def _total(request: PreviewRequest, results: list[RewardScoresOut]) -> list[float] | None:
    """TRL's reward per completion: the weighted sum over reward functions, a None score counting as nothing."""
    if any(r.scores is None for r in results):
        return None
    weights = request.reward_weights or [1.0] * len(results)
    totals = []
    for index in range(len(request.completions)):
        parts = [w * s for w, r in zip(weights, results, strict=True) if (s := r.scores[index]) is not None]  # type: ignore[index]
        totals.append(math.fsum(parts))
    return totals


@router.post(
    "/preview",
    response_model=PreviewOut,
    responses={422: {"model": ErrorBody}, **RATE_LIMITED_RESPONSE},
    dependencies=[rate_limited(Action.PREVIEW)],
)
def preview(request: PreviewRequest, svc: ServicesDep, caller: Writer) -> PreviewOut:
    """Score completions with reward functions, as a job would, without a worker or a GPU.

    Each reward is called with the keyword arguments TRL passes (`prompts`, `completions`, `completion_ids`,
    `trainer_state` (null here), and every entry of `columns`), in the sandbox that jobs run Python rewards in,
    with `GRPO_PREVIEW_TIMEOUT_SECONDS` per reward. A reward that raises, runs too long or returns the wrong thing
    gets an `error` (and traceback) instead of scores; what the functions print comes back in `output`.
    Reward models are not previewed; one the operator's policy would refuse in a job (a hub id with
    `GRPO_HUB=off`, a path outside `GRPO_MODEL_ROOTS`) is a 422 here too. A key past `GRPO_RATE_LIMIT_PREVIEW`, or
    a server already running `GRPO_PREVIEW_CONCURRENCY` previews, is answered 429 with `Retry-After`.
    """
    settings = svc.settings
    problems = _length_problems(request) + check_reward_sources(request.reward_funcs)
    problems += check_reward_models(request.reward_funcs, SpecPolicy.from_settings(settings))
    if problems:
        raise SpecError(problems)
    with preview_slot(settings.preview_concurrency):
        limits = SandboxLimits(
            min(settings.preview_timeout_seconds, settings.reward_timeout_seconds),
            settings.reward_memory_mb,
            "GRPO_PREVIEW_TIMEOUT_SECONDS",
            settings.reward_require_kernel_sandbox,
        )
        inputs = PreviewInputs(request.completions, request.prompts, request.completion_ids, request.columns)
        result = preview_rewards(request.reward_funcs, inputs, limits)
    results = [RewardScoresOut.model_validate(r, from_attributes=True) for r in result.results]
    return PreviewOut(results=results, total=_total(request, results), output=result.output, sandbox=result.confinement)
