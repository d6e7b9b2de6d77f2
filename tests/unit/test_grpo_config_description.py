"""The stored description of GRPOConfig (what the API validates against) matches the installed TRL, and the
submit-time rules agree with what TRL itself accepts and refuses."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from shared.spec import grpo_config
from shared.spec.grpo_args import check_args
from shared.spec.grpo_config import DESCRIPTION_PATH, describe_installed_grpo_config
from shared.spec.json_fields import render_description


def test_stored_description_matches_installed_trl() -> None:
    fresh = render_description(describe_installed_grpo_config())
    assert DESCRIPTION_PATH.read_text() == fresh, (
        "shared/spec/grpo_config_fields.json is out of date with the installed TRL: "
        "run `python -m shared.spec.grpo_config --write` and review the diff"
    )


@pytest.mark.parametrize("field", sorted(grpo_config.TRL_STRING_CHOICES))
def test_string_choices_are_the_ones_trl_documents(field: str) -> None:
    described = grpo_config.grpo_config_fields()[field]
    for choice in grpo_config.TRL_STRING_CHOICES[field]:
        # Quoted in the help text, with either quote (TRL writes "`group'" for scale_rewards).
        assert re.search(rf"[`']{re.escape(choice)}[`']", described["help"]), (field, choice)


def _trl_accepts(args: dict[str, Any], tmp_path: Path) -> bool:
    """Whether the installed TRL's GRPOConfig takes these arguments (on this CPU-only machine)."""
    from trl import GRPOConfig

    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GRPOConfig(**{"output_dir": str(tmp_path), "bf16": False, "use_cpu": True, "report_to": "none", **args})
    except (ValueError, TypeError, OSError, ImportError, KeyError):
        return False
    return True


# Rules GRPOConfig itself enforces: the submit-time verdict must be the same, both ways.
CONFIG_RULE_CASES = (
    [
        {"per_device_train_batch_size": b, "gradient_accumulation_steps": a, "num_generations": g}
        for b, a, g in itertools.product([1, 2, 3, 4, 6], [1, 2, 3], [1, 2, 3, 4])
    ]
    + [
        {"per_device_train_batch_size": b, "num_generations": g, "generation_batch_size": s}
        for b, g, s in itertools.product([2, 4], [2, 4], [4, 6, 8, 12])
    ]
    + [
        {"per_device_train_batch_size": b, "num_generations": g, "steps_per_generation": s}
        for b, g, s in itertools.product([2, 3], [2, 4], [1, 2, 3])
    ]
    + [
        {"generation_batch_size": 8, "steps_per_generation": 2},
        {"auto_find_batch_size": True},
        {"vllm_importance_sampling_clip_min": 3.0, "vllm_importance_sampling_clip_max": 2.0},
        {"vllm_importance_sampling_mode": "token_truncate", "vllm_importance_sampling_clip_max": None},
        {"log_completions_hub_repo": "me/completions"},
        {"scale_rewards": True},
        {"scale_rewards": "batch"},
        {"load_best_model_at_end": True},
        {"load_best_model_at_end": True, "eval_strategy": "steps", "save_steps": 10, "eval_steps": 5},
        {"load_best_model_at_end": True, "eval_strategy": "steps", "save_steps": 10, "eval_steps": 3},
        {"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "epoch"},
        {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "steps"},
        {"logging_steps": 2.5},
        {"save_steps": 0.5},
        {"dataloader_prefetch_factor": 2, "dataloader_num_workers": 1},
        {"pad_to_multiple_of": "64"},
        {"debug": "underflow_overflow"},
        {"accelerator_config": {"split_batches": True}},
        {"per_device_eval_batch_size": 3, "eval_strategy": "steps"},
        {"per_device_eval_batch_size": 8, "eval_strategy": "steps"},
    ]
)


@pytest.mark.parametrize("args", CONFIG_RULE_CASES, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_submit_time_rules_agree_with_trl(args: dict[str, Any], tmp_path: Path) -> None:
    # An eval dataset is declared so that the Trainer-level rule (eval_strategy needs one) stays out of the way.
    problems = check_args(args, reward_count=1, has_eval_dataset=True)
    assert bool(problems) == (not _trl_accepts(args, tmp_path)), problems


# Values tried for every field; fields with choices also get each choice.
SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    3,
    1.5,
    0.5,
    -0.5,
    1e9,
    "",
    "x",
    "auto",
    "none",
    "no",
    "steps",
    [],
    ["x"],
    [1.0],
    {},
    {"a": 1},
]
# Where the service accepts a value TRL refuses here, and why that is right.
ACCEPTED_THOUGH_TRL_REFUSES_HERE = {
    "accelerator_config": "a string is the path of a JSON file on the worker, which only the worker can read",
    "tf32": "it needs an Ampere GPU, which this machine lacks; CPU-only deployments refuse it at submit",
}


def _samples(description: dict[str, Any]) -> list[Any]:
    return SAMPLES + description.get("choices", []) + description.get("item_choices", [])


@pytest.mark.parametrize("field", sorted(grpo_config.grpo_config_fields()))
def test_trl_refuses_no_single_value_the_service_accepts(field: str, tmp_path: Path) -> None:
    description = grpo_config.grpo_config_fields()[field]
    disagreements = [
        value
        for value in _samples(description)
        if not check_args({field: value}, reward_count=1, has_eval_dataset=True)
        and not _trl_accepts({field: value}, tmp_path)
    ]
    if field == "accelerator_config":
        assert all(isinstance(v, str) for v in disagreements), disagreements
        return
    if field == "tf32":
        assert disagreements == [True]
        assert check_args({"tf32": True}, reward_count=1, device="cpu")
        return
    assert disagreements == [], f"the service accepts args.{field} = {disagreements} but TRL refuses them"


def test_described_defaults_are_trl_defaults(tmp_path: Path) -> None:
    from trl import GRPOConfig

    config = GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True)
    for name in (
        "num_generations",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "beta",
        "loss_type",
        "learning_rate",
        "max_completion_length",
    ):
        assert grpo_config.default(name) == getattr(config, name), name
