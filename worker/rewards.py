"""Turning a spec's `reward_funcs` into what `GRPOTrainer(reward_funcs=...)` takes.

Built-ins run in the training process; users' Python rewards run in a sandbox process (see `sandbox.py`), behind a
callable that TRL calls as it calls any reward function; reward models are handed to TRL, which loads them.
Every callable is checked so that a reward that raises or returns something that is not one number per completion
fails the job with a message naming the function, instead of a stack trace from deep inside TRL.
"""

from __future__ import annotations

import math
import numbers
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sandbox.builtin import build_builtin
from sandbox.client import BadRewards, RewardCallFailed, Sandbox, SandboxLimits, sandbox_entry
from shared.spec.rewards import ModelReward, PythonReward, RewardSpec
from worker.model_paths import check_model_reference

# Keyword arguments TRL passes that cannot cross to the sandbox as JSON (it gets stand-ins it can call, and the
# environments by handle).
LOCAL_ONLY = ("log_metric", "log_extra", "environments")
TRAINER_STATE_FIELDS = ("global_step", "max_steps", "epoch", "num_train_epochs", "logging_steps", "save_steps")


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned something TRL cannot use."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


def check_rewards(name: str, rewards: Any, expected: int) -> list[float | None]:
    """One finite number (or None: TRL leaves it out) per completion, or a RewardFunctionError saying what came."""
    if not isinstance(rewards, list | tuple):
        raise RewardFunctionError(
            f"reward function {name!r} returned {type(rewards).__name__}, not a list: return one float per completion"
        )
    if len(rewards) != expected:
        raise RewardFunctionError(
            f"reward function {name!r} returned {len(rewards)} value(s) for {expected} completion(s): "
            "return one per completion"
        )
    for index, value in enumerate(rewards):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
        ):
            raise RewardFunctionError(
                f"reward function {name!r} returned {value!r} at index {index}: rewards must be finite numbers "
                "(or None to leave a completion out)"
            )
    return list(rewards)


def guarded_builtin(function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in reward whose errors and results are checked like a user's."""
    name = function.__name__

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        try:
            rewards = function(completions=completions, **kwargs)
        except Exception as error:
            raise RewardFunctionError(f"reward function {name!r} raised {type(error).__name__}: {error}") from error
        return check_rewards(name, rewards, len(completions))

    reward.__name__ = name
    return reward


def _trainer_state(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    return {key: getattr(state, key, None) for key in TRAINER_STATE_FIELDS}


def _to_sandbox(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Make TRL's keyword arguments fit to cross to the sandbox (in place); returns those that stay here."""
    local = {key: kwargs.pop(key, None) for key in LOCAL_ONLY}
    kwargs["trainer_state"] = _trainer_state(kwargs.get("trainer_state"))
    if local["environments"] is not None:
        # The rollouts' environments live in this same sandbox: the reward gets the instances themselves.
        kwargs["environments"] = [getattr(env, "handle", None) for env in local["environments"]]
    return local


def sandboxed(sandbox: Sandbox, spec: PythonReward) -> Callable[..., Any]:
    """The callable TRL calls for a Python reward: the call runs in the sandbox."""
    name = spec.reward_name

    def reward(**kwargs: Any) -> list[float | None]:
        local = _to_sandbox(kwargs)
        completions = kwargs["completions"]
        try:
            result = sandbox.call(name, kwargs)
        except BadRewards as error:
            raise RewardFunctionError(str(error)) from None  # a wrong list always fails, on_error notwithstanding
        except RewardCallFailed as error:
            if spec.on_error != "zero":
                raise RewardFunctionError(str(error), error.traceback) from None
            if local["log_metric"] is not None:
                local["log_metric"](f"rewards/{name}/errors", float(len(completions)))
            return [0.0] * len(completions)
        if local["log_metric"] is not None:
            for metric, value in result.metrics:
                local["log_metric"](metric, value)
            if spec.on_error == "zero":
                local["log_metric"](f"rewards/{name}/errors", 0.0)
        if local["log_extra"] is not None:
            for column, values in result.extras:
                local["log_extra"](column, values)
        return result.rewards

    reward.__name__ = name
    if name.isidentifier():  # a stack (the stall watchdog's report) then names the reward it is waiting for
        reward.__code__ = reward.__code__.replace(co_name=name)
    return reward


@dataclass
class Rewards:
    """The reward functions of one job, and the sandbox their Python ones run in (close it when done)."""

    functions: list[Callable[..., Any] | str] = field(default_factory=list)
    sandbox: Sandbox | None = None

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            # What user code left in its scratch (a script, say) must not outlive the job: nothing may point a later
            # process at it.
            shutil.rmtree(self.sandbox.scratch, ignore_errors=True)


def build_reward_funcs(
    specs: list[RewardSpec],
    scratch: Path,
    limits: SandboxLimits,
    log: IO[Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
    environments: list[dict[str, Any]] | None = None,
) -> Rewards:
    """What GRPOTrainer's `reward_funcs` takes, in spec order; the Python ones share one sandbox in `scratch`, with
    the job's tools and environments (worker/agents.py), when it has any."""
    python = [
        sandbox_entry(spec, f"reward_funcs[{i}]") for i, spec in enumerate(specs) if isinstance(spec, PythonReward)
    ]
    needed = python or tools or environments
    sandbox = Sandbox(python, scratch, limits, log, tools, environments) if needed else None
    if sandbox is not None:
        try:
            sandbox.start()
        except RewardCallFailed as error:
            raise RewardFunctionError(str(error), error.traceback) from None
    rewards = Rewards(sandbox=sandbox)
    for index, spec in enumerate(specs):
        if isinstance(spec, PythonReward):
            assert sandbox is not None
            rewards.functions.append(sandboxed(sandbox, spec))
        elif isinstance(spec, ModelReward):
            check_model_reference(spec.model, f"reward_funcs[{index}].model")
            rewards.functions.append(spec.model)
        else:
            rewards.functions.append(guarded_builtin(build_builtin(spec)))
    return rewards
