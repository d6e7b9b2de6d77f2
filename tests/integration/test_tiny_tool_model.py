"""The tool-calling tiny model (`grpo tiny-model DIR --tool-calling`): TRL takes its chat template as it is, it calls
the built-in calculator for most unseen questions when sampled as GRPO samples, and a real `GRPOTrainer` runs TRL's
tool loop on it on a CPU."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.chat_template_utils import (
    add_response_schema,
    is_chat_template_prefix_preserving,
    parse_response,
    supports_tool_calling,
)

from sandbox.builtin_tools import calculator
from shared.settings import Settings
from worker.config import choose_precision
from worker.tiny_tool_model import measure_tool_calls, tool_schemas

QUESTIONS = {"What is 12 + 7?": "19", "What is 45 - 19?": "26", "What is 6 * 8?": "48", "What is 33 + 58?": "91"}
BATCH = 8  # completions per step: two questions, four completions each


def test_trl_parses_its_tool_calls_and_keeps_its_chat_template(tiny_tool_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_tool_model)
    assert supports_tool_calling(tokenizer)
    # Prefix-preserving: GRPOTrainer trains with the template the model was trained on, not a substitute of its own.
    assert is_chat_template_prefix_preserving(tokenizer)
    add_response_schema(tokenizer)  # raises for a template TRL does not know
    prompt = [{"role": "user", "content": "What is 3 + 4?"}]
    prefix = tokenizer.apply_chat_template(
        prompt, tools=[calculator], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    completion = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3 + 4"}}\n</tool_call><|im_end|>'
    parsed = parse_response(tokenizer, tokenizer.encode(completion), prefix=prefix, tools=[calculator])
    call = {"name": "calculator", "arguments": {"expression": "3 + 4"}}
    assert parsed["tool_calls"] == [{"type": "function", "function": call}]


@pytest.mark.parametrize(
    "tool",
    [calculator, tool_schemas()[1]],
    ids=["the-function", "the-services-stand-in-schema"],
)
def test_it_calls_the_calculator_for_most_unseen_questions(tiny_tool_model: Path, tool: Any) -> None:
    share = measure_tool_calls(tiny_tool_model, tool=tool)
    print(share.describe())
    assert share.calls_calculator >= 0.3 * share.prompts, share.describe()
    # Right and wrong expressions both: GRPO learns from the difference between the completions of a group.
    assert 0 < share.right_arguments < share.prompts, share.describe()


def right_answer(completions: list[list[dict[str, Any]]], answer: list[str], **kwargs: Any) -> list[float]:
    return [
        1.0 if expected in (messages[-1].get("content") or "") else 0.0
        for messages, expected in zip(completions, answer, strict=True)
    ]


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and "train_runtime" not in logs:  # the end-of-training summary is not a step
            self.steps.append(dict(logs))


def test_grpo_trainer_runs_the_calculator_the_model_calls(tiny_tool_model: Path, tmp_path: Path) -> None:
    calls: list[str] = []

    @functools.wraps(calculator)  # the same name, signature and docstring: the schema the model was trained with
    def counted_calculator(expression: str) -> str:
        calls.append(expression)
        return calculator(expression)

    config = GRPOConfig(
        output_dir=str(tmp_path),
        report_to="none",
        disable_tqdm=True,
        max_steps=2,
        num_generations=4,
        per_device_train_batch_size=BATCH,
        max_completion_length=48,
        max_tool_calling_iterations=2,
        beta=0.0,
        logging_steps=1,
        gradient_checkpointing=False,
        **choose_precision({}, Settings(device="cpu")),  # as the service configures a CPU worker
    )
    logs = Logs()
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": a} for q, a in QUESTIONS.items()]
    trainer = GRPOTrainer(
        model=str(tiny_tool_model),
        reward_funcs=[right_answer],
        args=config,
        train_dataset=Dataset.from_list(rows),
        callbacks=[logs],
        tools=[counted_calculator],
    )
    trainer.train()

    for step in logs.steps:
        print({key: step[key] for key in ("tools/call_frequency", "tools/failure_frequency", "reward") if key in step})
    print(f"the calculator ran {len(calls)} times: {calls[:6]} ...")
    assert len(logs.steps) == 2
    assert all(step["tools/call_frequency"] > 0 for step in logs.steps)
    # TRL's frequency is calls per completion: what ran here is what it counted.
    assert len(calls) == round(sum(step["tools/call_frequency"] * BATCH for step in logs.steps))
