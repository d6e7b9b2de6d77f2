"""Sample completions, captured from what `GRPOTrainer` already gathers for `log_completions`.

At every generation TRL keeps the batch's prompts, completions, each reward function's scores and the advantages
in `trainer._logs` (bounded deques of one generation batch, filled whatever `log_completions` says). At a logging
step the service copies the first few of them, so a user can read what the model writes without anything being
generated again. `_logs` is TRL's own attribute: `tests/unit/test_samples.py` checks its shape against the
installed TRL.
"""

from __future__ import annotations

import math
from typing import Any

# What TRL keeps per completion in `_logs` (its names), read here.
LOG_FIELDS = ("prompt", "completion", "rewards", "advantages")


# What a chat message keeps in a sample: the whole conversation of an agent (its tool calls, each tool's name and
# result) reads as one; images and other payloads are not for reading.
MESSAGE_KEYS = ("role", "content", "name", "tool_calls")


def _cut(value: Any, max_chars: int) -> Any:
    """A prompt or completion (text, or chat messages) with every text cut to `max_chars`."""
    if isinstance(value, str):
        return value if len(value) <= max_chars else value[:max_chars] + f"[... {len(value) - max_chars} more]"
    if isinstance(value, list | tuple):
        return [_cut(item, max_chars) for item in value]
    if isinstance(value, dict):
        keep = MESSAGE_KEYS if "role" in value else tuple(value)
        return {str(key): _cut(item, max_chars) for key, item in value.items() if key in keep}
    if value is None or isinstance(value, bool | int | float):
        return value
    return _cut(str(value), max_chars)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def capture_samples(trainer: Any, count: int, max_chars: int) -> list[dict[str, Any]]:
    """The first `count` completions of the trainer's latest generation batch, with their prompts, rewards (by
    reward function name) and advantages; empty when TRL has gathered none."""
    logs = getattr(trainer, "_logs", None)
    if count <= 0 or not isinstance(logs, dict) or not all(field in logs for field in LOG_FIELDS):
        return []
    prompts, completions = list(logs["prompt"]), list(logs["completion"])
    advantages = list(logs["advantages"])
    rewards = {str(name): list(values) for name, values in logs["rewards"].items()}
    size = min(count, len(prompts), len(completions))
    return [
        {
            "prompt": _cut(prompts[i], max_chars),
            "completion": _cut(completions[i], max_chars),
            "rewards": {name: _number(values[i]) if i < len(values) else None for name, values in rewards.items()},
            "advantage": _number(advantages[i]) if i < len(advantages) else None,
        }
        for i in range(size)
    ]
