"""The reward preview (`POST /v1/rewards/preview`): each reward of a spec scored on given completions, without a
worker, a model or a GPU.

Every reward runs in one fresh sandbox (the one jobs run Python rewards in, built-ins included, so that nothing a
request sends runs inside the API process), called with the keyword arguments TRL would pass. What a reward prints
comes back too: printing is how people debug reward code.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.client import RewardCallFailed, Sandbox, SandboxLimits, sandbox_entry
from shared.spec.rewards import ModelReward, RewardSpec

# The most of a preview's printed output that comes back.
MAX_OUTPUT_CHARS = 20_000
MODEL_NOT_PREVIEWED = (
    "reward models are not previewed: scoring needs the model loaded on a worker (submit a short job, e.g. "
    "max_steps=1, to try one)"
)


@dataclass
class PreviewInputs:
    """What TRL would pass the reward functions for one batch."""

    completions: list[Any]
    prompts: list[Any] | None = None
    completion_ids: list[list[int]] | None = None
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        count = len(self.completions)
        return {
            "prompts": self.prompts if self.prompts is not None else [None] * count,
            "completions": self.completions,
            "completion_ids": self.completion_ids if self.completion_ids is not None else [None] * count,
            "trainer_state": None,
            **self.columns,
        }


@dataclass
class RewardScores:
    """One reward's scores for the completions (None entries: TRL leaves those out), or why it has none."""

    index: int
    name: str
    scores: list[float | None] | None = None
    error: str | None = None
    traceback: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Preview:
    results: list[RewardScores]
    output: str = ""
    # What the kernel enforced on the sandbox (Confinement.describe()), when one started.
    confinement: str | None = None


def preview_rewards(specs: list[RewardSpec], inputs: PreviewInputs, limits: SandboxLimits) -> Preview:
    """Score the completions with each reward, in spec order; a reward that fails has an error, not scores."""
    results = [RewardScores(index, spec.reward_name) for index, spec in enumerate(specs)]
    entries = [
        sandbox_entry(spec, f"reward_funcs[{index}]")
        for index, spec in enumerate(specs)
        if not isinstance(spec, ModelReward)
    ]
    with tempfile.TemporaryDirectory(prefix="grpo-preview-") as scratch:
        log_path = Path(scratch) / "output.log"
        with log_path.open("wb") as log:
            sandbox = Sandbox(entries, Path(scratch) / "scratch", limits, log)
            try:
                _score_all(sandbox, specs, inputs, results)
            finally:
                sandbox.close()
        output = log_path.read_text(errors="replace")
    confinement = sandbox.confinement.describe() if sandbox.confinement is not None else None
    if len(output) > MAX_OUTPUT_CHARS:
        output = output[:MAX_OUTPUT_CHARS] + f"\n[... {len(output) - MAX_OUTPUT_CHARS} more characters]"
    return Preview(results, output, confinement)


def _score_all(sandbox: Sandbox, specs: list[RewardSpec], inputs: PreviewInputs, results: list[RewardScores]) -> None:
    started = False
    for spec, result in zip(specs, results, strict=True):
        if isinstance(spec, ModelReward):
            result.error = MODEL_NOT_PREVIEWED
            continue
        began = time.perf_counter()
        try:
            if not started:
                sandbox.start()
                started = True
            answer = sandbox.call(spec.reward_name, inputs.kwargs())
        except RewardCallFailed as error:
            result.error, result.traceback = str(error), error.traceback
        else:
            result.scores = answer.rewards
            result.metrics = dict(answer.metrics)
        result.seconds = round(time.perf_counter() - began, 4)
