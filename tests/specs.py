"""Job specs the tests submit."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED_EXAMPLE: dict[str, Any] = json.loads((ROOT / "examples" / "seed_job.json").read_text())


def job_spec(model: Path | str, **overrides: Any) -> dict[str, Any]:
    """A small valid job on the tiny model: 8 steps, the built-in length reward, kl logged (beta > 0)."""
    spec: dict[str, Any] = {
        "model": str(model),
        "train_dataset": {"rows": [{"prompt": "What is 2+2?"}, {"prompt": "Say hi."}]},
        "reward_funcs": [{"type": "builtin", "name": "length", "params": {"ideal_length": 10}}],
        "args": {
            "max_steps": 8,
            "num_generations": 4,
            "per_device_train_batch_size": 4,
            "max_completion_length": 8,
            "learning_rate": 1e-3,
            "beta": 0.04,
            "logging_steps": 1,
            "gradient_checkpointing": False,
        },
    }
    spec.update(overrides)
    return spec


def seed_example(model: Path | str) -> dict[str, Any]:
    """examples/seed_job.json (the seed's three reward functions, its GRPOConfig arguments) on `model`."""
    spec = copy.deepcopy(SEED_EXAMPLE)
    spec["model"] = str(model)
    return spec


def python_reward(source: str, **extra: Any) -> dict[str, Any]:
    return {"type": "python", "source": source, **extra}


# An environment (environment_factory) whose state is a number: `increment` is its tool, the number its reward.
COUNTER = '''
class Counter:
    def reset(self, **row):
        self.n = 0

    def increment(self, by: int) -> str:
        """Add to the counter.

        Args:
            by: How much to add.
        """
        self.n += by
        return str(self.n)

    def get_reward(self) -> float:
        return float(self.n)
'''
