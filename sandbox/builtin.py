"""The built-in reward functions a spec names with `{"type": "builtin", "name": ...}`.

Each takes the completions (text, or chat messages) and the dataset columns as TRL passes them, and returns one
float per completion. They are trusted code: they run in the training process (and in the API's preview), not in
the sandbox that runs users' Python rewards.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter

from shared.spec.rewards import (
    AccuracyReward,
    BuiltinReward,
    ExactMatchReward,
    FormatReward,
    JsonValidReward,
    LengthReward,
    RegexReward,
)

RewardFunction = Callable[..., list[float | None]]
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
JSON_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
# math-verify's own limit per parse and per comparison (it uses SIGALRM, so only in a main thread).
MATH_VERIFY_SECONDS = 5


def completion_text(completion: Any) -> str:
    """The text of a completion: standard completions are strings, conversational ones lists of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def _column(kwargs: dict[str, Any], column: str, reward: str) -> list[Any]:
    if column not in kwargs:
        raise KeyError(f"the {reward} reward reads the dataset column {column!r}, which the dataset does not have")
    values: list[Any] = kwargs[column]
    return values


def length(spec: LengthReward) -> RewardFunction:
    ideal = spec.params.ideal_length

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [-float(abs(ideal - len(completion_text(c)))) for c in completions]

    return reward


def format_(spec: FormatReward) -> RewardFunction:
    params = spec.params
    pattern = re.compile(params.pattern, re.DOTALL)

    def score(text: str) -> float:
        match = pattern.search(text)
        if match is None:
            return 0.0
        groups = [g.strip() for g in match.groups()] + ["", ""]
        reasoning, answer = groups[0], groups[1]
        if len(reasoning) > params.min_reasoning_chars and answer:
            return params.full_credit
        return params.partial_credit

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [score(completion_text(c)) for c in completions]

    return reward


def regex(spec: RegexReward) -> RewardFunction:
    params = spec.params
    flags = re.DOTALL | (re.IGNORECASE if params.ignore_case else 0)
    pattern = re.compile(params.pattern, flags)
    matches = pattern.fullmatch if params.fullmatch else pattern.search

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [params.match_score if matches(completion_text(c)) else params.miss_score for c in completions]

    return reward


def final_answer(text: str) -> str:
    """The answer part of a completion: inside `<answer>...</answer>` when there is one, else all of it."""
    tagged = ANSWER_TAG.findall(text)
    return (tagged[-1] if tagged else text).strip()


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def plain_equal(answer: str, gold: str) -> bool:
    """String equality, or number equality where both are numbers (`4`, `4.0`, `1,000`)."""
    if answer.strip().lower() == gold.strip().lower():
        return True
    left, right = _number(answer), _number(gold)
    return left is not None and right is not None and left == right


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    import math_verify  # imported once, on the first accuracy reward

    return math_verify


def answers_match(completion: str, gold: Any) -> bool:
    """math-verify's verdict on the completion against the gold answer; plain equality where it parses neither."""
    math_verify = _math_verify()
    gold_text = str(gold)
    limit = MATH_VERIFY_SECONDS if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = math_verify.parse(gold_text if "$" in gold_text else f"${gold_text}$", parsing_timeout=limit)
        answer_parsed = math_verify.parse(completion, parsing_timeout=limit)
        if gold_parsed and answer_parsed:
            return bool(math_verify.verify(gold_parsed, answer_parsed, timeout_seconds=limit))
    except Exception:  # math-verify raises on some inputs it cannot read: fall back to plain equality
        pass
    return plain_equal(final_answer(completion), gold_text)


def accuracy(spec: AccuracyReward) -> RewardFunction:
    column = spec.params.column

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        golds = _column(kwargs, column, "accuracy")
        return [1.0 if answers_match(completion_text(c), g) else 0.0 for c, g in zip(completions, golds, strict=True)]

    return reward


def exact_match(spec: ExactMatchReward) -> RewardFunction:
    params = spec.params

    def normal(value: Any) -> str:
        text = str(value)
        text = text.strip() if params.strip else text
        return text.lower() if params.ignore_case else text

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        golds = _column(kwargs, params.column, "exact_match")
        return [
            1.0 if normal(completion_text(c)) == normal(g) else 0.0 for c, g in zip(completions, golds, strict=True)
        ]

    return reward


def json_valid(spec: JsonValidReward) -> RewardFunction:
    schema = spec.params.json_schema
    validator: Any = None
    if schema is not None:
        import jsonschema

        validator = jsonschema.validators.validator_for(schema)(schema)

    def score(text: str) -> float:
        fenced = JSON_FENCE.match(text.strip())
        try:
            value = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            return 0.0
        return 1.0 if validator is None or validator.is_valid(value) else 0.0

    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        return [score(completion_text(c)) for c in completions]

    return reward


BUILTINS: dict[type, Callable[[Any], RewardFunction]] = {
    LengthReward: length,
    FormatReward: format_,
    RegexReward: regex,
    AccuracyReward: accuracy,
    ExactMatchReward: exact_match,
    JsonValidReward: json_valid,
}


def build_builtin(spec: BuiltinReward) -> RewardFunction:
    """The reward function a built-in spec describes, named as TRL will log it."""
    function = BUILTINS[type(spec)](spec)
    function.__name__ = spec.reward_name
    return function


_BUILTIN_SPEC: TypeAdapter[BuiltinReward] = TypeAdapter(BuiltinReward)


def build_builtin_from_json(spec: dict[str, Any]) -> RewardFunction:
    """`build_builtin` for a spec sent as JSON (to the reward sandbox)."""
    return build_builtin(_BUILTIN_SPEC.validate_python(spec))
