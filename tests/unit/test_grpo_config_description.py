"""The stored description of GRPOConfig (what the API validates against) matches the installed TRL, and the
submit-time rules agree with what TRL itself accepts and refuses."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from shared import grpo_args
from shared.grpo_args import DESCRIPTION_PATH, check_args, describe_installed_grpo_config, render_description


def test_stored_description_matches_installed_trl() -> None:
    fresh = render_description(describe_installed_grpo_config())
    assert DESCRIPTION_PATH.read_text() == fresh, (
        "shared/grpo_config_fields.json is out of date with the installed TRL: "
        "run `python -m shared.grpo_args --write` and review the diff"
    )


@pytest.mark.parametrize("field", sorted(grpo_args.TRL_STRING_CHOICES))
def test_string_choices_are_the_ones_trl_documents(field: str) -> None:
    described = grpo_args.grpo_config_fields()[field]
    for choice in grpo_args.TRL_STRING_CHOICES[field]:
        # Quoted in the help text, with either quote (TRL writes "`group'" for scale_rewards).
        assert re.search(rf"[`']{re.escape(choice)}[`']", described["help"]), (field, choice)


def _trl_accepts(args: dict[str, Any], tmp_path: Path) -> bool:
    from trl import GRPOConfig

    try:
        GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none", **args)
    except ValueError:
        return False
    return True


BATCH_CASES = (
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
    ]
)


@pytest.mark.parametrize("args", BATCH_CASES, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_submit_time_rules_agree_with_trl(args: dict[str, Any], tmp_path: Path) -> None:
    refused = bool(check_args(args, reward_count=1))
    assert refused == (not _trl_accepts(args, tmp_path)), check_args(args, reward_count=1)


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
        assert grpo_args.default(name) == getattr(config, name), name
