"""Turning a spec's `reward_funcs` into what `GRPOTrainer(reward_funcs=...)` takes.

Every callable is wrapped so that a reward that raises or returns something that is not a number fails the job
with a message naming the function, instead of a stack trace from deep inside TRL.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import linecache
import math
import numbers
import traceback
from collections.abc import Callable
from typing import Any

from shared.spec import LengthReward, ModelReward, PythonReward, RewardSpec
from worker.model_paths import check_model_reference
from worker.rewards.builtin import BUILTINS


class RewardFunctionError(RuntimeError):
    """A reward function raised, or returned something TRL cannot use."""


def _where(error: BaseException, filename: str) -> str:
    """` (reward_funcs[0] line 3: return 1/0)` for the deepest frame of user code in the traceback."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f" ({filename.strip('<>')} line {frame.lineno}{code})"


def _check_rewards(name: str, rewards: Any) -> list[Any]:
    if not isinstance(rewards, list | tuple):
        raise RewardFunctionError(
            f"reward function {name!r} returned {type(rewards).__name__}, not a list: return one float per completion"
        )
    for index, value in enumerate(rewards):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise RewardFunctionError(
                f"reward function {name!r} returned {value!r} at index {index}: rewards must be finite numbers "
                "(or None to leave a completion out)"
            )
    return list(rewards)


def guarded(function: Callable[..., Any], name: str, filename: str = "") -> Callable[..., Any]:
    """`function` under `name`, with its errors and bad results turned into a RewardFunctionError."""

    def fail(error: Exception) -> RewardFunctionError:
        return RewardFunctionError(
            f"reward function {name!r} raised {type(error).__name__}: {error}{_where(error, filename)}"
        )

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def async_reward(*args: Any, **kwargs: Any) -> list[Any]:
            try:
                rewards = await function(*args, **kwargs)
            except RewardFunctionError:
                raise
            except Exception as error:
                raise fail(error) from error
            return _check_rewards(name, rewards)

        async_reward.__name__ = name
        return async_reward

    @functools.wraps(function)
    def reward(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            rewards = function(*args, **kwargs)
        except RewardFunctionError:
            raise
        except Exception as error:
            raise fail(error) from error
        return _check_rewards(name, rewards)

    reward.__name__ = name
    return reward


def compile_python_reward(spec: PythonReward, path: str) -> Callable[..., Any]:
    """Execute a Python reward source in a module of its own and return the function it names."""
    filename = f"<{path}>"
    # Let tracebacks show the user's source lines.
    linecache.cache[filename] = (len(spec.source), None, spec.source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": f"grpo_reward_{path}", "__builtins__": builtins}
    try:
        exec(compile(spec.source, filename, "exec"), namespace)
    except Exception as error:
        raise RewardFunctionError(
            f"{path}: running the source raised {type(error).__name__}: {error}{_where(error, filename)}"
        ) from error
    function = namespace.get(spec.reward_name)
    if not callable(function):
        raise RewardFunctionError(f"{path}: the source does not define a callable {spec.reward_name!r}")
    return guarded(function, spec.reward_name, filename)


def build_reward_funcs(specs: list[RewardSpec]) -> list[Callable[..., Any] | str]:
    """What GRPOTrainer's `reward_funcs` takes, in spec order: callables, or model ids TRL loads itself."""
    reward_funcs: list[Callable[..., Any] | str] = []
    for index, spec in enumerate(specs):
        path = f"reward_funcs[{index}]"
        if isinstance(spec, LengthReward):
            function = BUILTINS[spec.name](**spec.params.model_dump())
            reward_funcs.append(guarded(function, spec.reward_name))
        elif isinstance(spec, PythonReward):
            reward_funcs.append(compile_python_reward(spec, path))
        elif isinstance(spec, ModelReward):
            check_model_reference(spec.model, f"{path}.model")
            reward_funcs.append(spec.model)
    return reward_funcs
