"""The service does not only run: the model learns. A reward a tiny model can learn fast (use the letter 'a')."""

from __future__ import annotations

import statistics
from pathlib import Path

from tests.processes import Service
from tests.specs import job_spec, python_reward

LETTER_A = python_reward(
    "def letter_a(completions, **kwargs):\n    return [c.count('a') / max(1, len(c)) for c in completions]\n"
)


def test_mean_reward_rises_on_the_embedded_service(embedded_service: Service, tiny_model: Path) -> None:
    spec = job_spec(
        tiny_model,
        train_dataset={"rows": [{"prompt": p} for p in ("Say hi.", "Tell me a story.", "Count to ten.", "Why?")]},
        reward_funcs=[LETTER_A],
    )
    spec["args"].update(
        max_steps=60, per_device_train_batch_size=8, max_completion_length=16, learning_rate=3e-2, seed=0
    )
    job = embedded_service.submit(spec)
    final = embedded_service.wait_finished(job["id"])
    assert final["status"] == "succeeded", final["error"]

    rewards = [p["metrics"]["reward"] for p in embedded_service.all_metrics(job["id"])]
    first, last = statistics.fmean(rewards[:10]), statistics.fmean(rewards[-10:])
    # Untrained, about 3% of characters are 'a'; the model learns to write mostly 'a'.
    print(f"letter_a reward: first 10 steps {first:.3f}, last 10 steps {last:.3f}")
    assert first < 0.2, rewards
    assert last > first + 0.3, rewards
