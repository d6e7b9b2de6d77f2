"""/v1/tools/preview: try an agent's tools and environment on given calls before spending GPU time on a job."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Writer
from api.deps import ServicesDep
from api.ratelimit import RATE_LIMITED_RESPONSE, Action, rate_limited
from api.routes.rewards import preview_slot
from api.schemas import ErrorBody
from api.tool_schemas import ToolCallOut, ToolPreviewOut, ToolPreviewRequest
from sandbox.client import SandboxLimits
from sandbox.tool_preview import preview_tools
from shared.spec.problems import Problem, SpecError
from shared.spec.tools import check_agent_sources

router = APIRouter(prefix="/v1/tools", tags=["tools"])


def _environment_problems(request: ToolPreviewRequest) -> list[Problem]:
    factory = request.environment_factory
    if isinstance(factory, dict) and request.environment not in factory:
        return [
            Problem(
                "environment",
                f"environment must name one of the environments ({', '.join(factory)}), as a row's `environment` "
                "column would",
            )
        ]
    if not isinstance(factory, dict) and request.environment is not None:
        return [Problem("environment", "environment names one of a dict of environments: there is no such dict")]
    return []


@router.post(
    "/preview",
    response_model=ToolPreviewOut,
    responses={422: {"model": ErrorBody}, **RATE_LIMITED_RESPONSE},
    dependencies=[rate_limited(Action.PREVIEW)],
)
def preview(request: ToolPreviewRequest, svc: ServicesDep, caller: Writer) -> ToolPreviewOut:
    """Run tool calls as a job would, without a worker, a model or a GPU.

    With an `environment_factory`, one instance is made and `reset(**row)` is called first; each call then runs
    (a tool of `tools` by its name, else the environment's method of that name), in the sandbox jobs run them in,
    with `GRPO_PREVIEW_TIMEOUT_SECONDS` per call; last, the environment's `get_reward()` when it has one. A call that
    raises or runs too long gets an `error` (what the model would read); what the code prints comes back in
    `output`. Sources that would be refused in a job are a 422 here too.
    """
    problems, scores = check_agent_sources(request)
    problems += _environment_problems(request)
    if not request.tools and request.environment_factory is None:
        problems.append(Problem("tools", "give tools or an environment_factory to try the calls on"))
    if problems:
        raise SpecError(problems)
    settings = svc.settings
    limits = SandboxLimits(
        min(settings.preview_timeout_seconds, settings.reward_timeout_seconds),
        settings.reward_memory_mb,
        "GRPO_PREVIEW_TIMEOUT_SECONDS",
        settings.reward_require_kernel_sandbox,
    )
    calls = [call.model_dump() for call in request.calls]
    with preview_slot(settings.preview_concurrency):
        result = preview_tools(request, calls, limits, request.row, request.environment, scores)
    return ToolPreviewOut(
        calls=[ToolCallOut.model_validate(call, from_attributes=True) for call in result.calls],
        observation=result.observation,
        reward=result.reward,
        error=result.error,
        output=result.output,
        sandbox=result.confinement,
    )
