"""Samples are copied from what the installed TRL's GRPOTrainer gathers (`_logs`): a real trainer on the tiny model,
two steps, read at each log exactly as the service's callback reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from worker.samples import capture_samples

MAX_CHARS = 12  # as long as the longest prompt: prompts are kept whole, completions cut


def brevity(completions: list[str], **kwargs: Any) -> list[float]:
    return [-float(len(c)) for c in completions]


def constant(completions: list[str], **kwargs: Any) -> list[float]:
    return [1.0 for _ in completions]


class Capture(TrainerCallback):
    def __init__(self) -> None:
        self.trainer: Any = None
        self.captured: list[list[dict[str, Any]]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if "train_runtime" not in logs:  # the end-of-training summary is not a step
            self.captured.append(capture_samples(self.trainer, 6, MAX_CHARS))


def test_samples_come_from_trls_gathered_completions(tiny_model: Path, tmp_path: Path) -> None:
    config = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=8,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
    )
    capture = Capture()
    prompts = ["What is 2+2?", "Say hi."]
    trainer = GRPOTrainer(
        model=str(tiny_model),
        reward_funcs=[brevity, constant],
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        callbacks=[capture],
    )
    capture.trainer = trainer
    trainer.train()

    assert len(capture.captured) == 2  # one per logged step
    for samples in capture.captured:
        assert len(samples) == 4  # the generation batch holds 4 completions; 6 were asked for
        for sample in samples:
            assert sample["prompt"] in prompts
            assert isinstance(sample["completion"], str)
            assert set(sample["rewards"]) == {"brevity", "constant"}
            assert sample["rewards"]["constant"] == 1.0
            assert isinstance(sample["advantage"], float)
        # One prompt's group: its four completions' advantages are centred on zero (scale_rewards normalises).
        assert abs(sum(s["advantage"] for s in samples)) < 1e-4
        # Each completion is cut to MAX_CHARS characters and says how much was left out.
        for sample in samples:
            full_length = int(-sample["rewards"]["brevity"])
            if full_length > MAX_CHARS:
                assert sample["completion"].endswith(f"[... {full_length - MAX_CHARS} more]")
            else:
                assert len(sample["completion"]) == full_length


def test_nothing_is_captured_from_a_trainer_without_gathered_completions() -> None:
    class NotATrainer:
        pass

    assert capture_samples(NotATrainer(), 4, 100) == []
    assert capture_samples(None, 4, 100) == []


def test_samples_are_taken_at_most_once_an_interval_and_at_the_last_step() -> None:
    from collections import defaultdict, deque

    from transformers import TrainerState

    from worker.metrics import MetricsCallback

    class Gathered:  # what GRPOTrainer keeps in `_logs` after a generation (the shape test above checks TRL's)
        _logs = {
            "prompt": deque(["p"]),
            "completion": deque(["c"]),
            "rewards": defaultdict(deque, {"r": deque([1.0])}),
            "advantages": deque([0.0]),
        }

    callback = MetricsCallback(None, None, "job", 1, samples_per_step=4, sample_interval=3600)  # type: ignore[arg-type]
    callback.trainer = Gathered()
    state = TrainerState(max_steps=10)
    taken = []
    for step in range(1, 11):
        state.global_step = step
        taken.append(bool(callback._samples(state, {"loss": 0.1})))
    assert taken == [True] + [False] * 8 + [True]  # the first, then nothing within the hour, then the last step
    assert callback._samples(state, {"eval_loss": 0.1}) is None  # an evaluation has no new completions
    every = MetricsCallback(None, None, "job", 1, samples_per_step=4, sample_interval=0)  # type: ignore[arg-type]
    every.trainer = Gathered()
    assert all(every._samples(state, {"loss": 0.1}) for _ in range(3))
