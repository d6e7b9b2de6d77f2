"""The built-in reward functions a spec names with `{"type": "builtin", "name": ...}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RewardFunction = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """The text of a completion: standard completions are strings, conversational ones lists of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def length(ideal_length: int = 20) -> RewardFunction:
    """The seed's length reward: `-abs(ideal_length - len(completion))`, best (0) at exactly `ideal_length` chars."""

    def length_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [-float(abs(ideal_length - len(completion_text(c)))) for c in completions]

    length_reward.__name__ = "length"
    return length_reward


BUILTINS: dict[str, Callable[..., RewardFunction]] = {"length": length}
