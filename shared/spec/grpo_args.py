"""`args` of a job spec, checked against TRL's `GRPOConfig` without importing TRL.

Types and choices come from the stored description of GRPOConfig (`shared.spec.grpo_config`). Beyond them,
`check_args` applies the rules TRL and transformers only enforce when a job runs (`GRPOConfig.__post_init__`,
`TrainingArguments._validate_args`, `Trainer.__init__`, `GRPOTrainer.__init__`; the rules across fields are in
`shared.spec.grpo_args_rules`), so that a spec they would reject is refused at submit time. A unit test compares
these verdicts with the installed TRL's, field by field.
"""

from __future__ import annotations

import json
from typing import Any

from shared.spec.grpo_args_rules import check_cross_field_rules
from shared.spec.grpo_config import default, grpo_config_fields
from shared.spec.json_fields import accepts, json_type_of, type_phrase
from shared.spec.problems import Problem, did_you_mean

# Fields the service sets itself; a spec that sets them is told why.
SERVICE_MANAGED: dict[str, str] = {
    "output_dir": "the service writes each job's checkpoints and final model to the job's own data dir: remove it",
}
# Fields for what the service cannot run yet: any value but the default is refused, with the reason.
NOT_SUPPORTED: dict[str, str] = {
    "deepspeed": "the service sets DeepSpeed up itself: ask for resources.distributed 'zero2' or 'zero3'",
    "fsdp": "the service sets FSDP up itself: ask for resources.distributed 'fsdp'",
    "ddp_backend": "the service picks the backend (nccl on GPUs, gloo on CPUs): ask for resources.processes",
}


# --- One field ------------------------------------------------------------------------------------------------


def _not_in(path: str, value: str, choices: list[str]) -> Problem:
    listed = ", ".join(repr(c) for c in choices)
    return Problem(
        path, f"{path} is {value!r}, which TRL does not accept{did_you_mean(value, choices)}: use one of {listed}"
    )


def _check_field(name: str, value: Any, description: dict[str, Any]) -> Problem | None:
    """Whether the value has a JSON type the field takes, and its choices, items or keys are ones TRL accepts."""
    path = f"args.{name}"
    kinds: list[str] = description["types"]
    value_type = json_type_of(value)
    if not kinds:
        return Problem(path, f"{path} cannot be set through a JSON spec (GRPOConfig takes a Python object): remove it")
    if not accepts(kinds, value_type):
        return Problem(path, f"{path} must be {type_phrase(kinds)}, not {json.dumps(value)}")
    # Each JSON type has its own constraints in the description; a value has one type, so at most one applies.
    if value_type == "string":
        return _check_string_choices(path, value, description)
    if value_type == "array":
        return _check_array_items(path, value, description)
    if value_type == "object":
        return _check_object_keys(path, value, description)
    return None


def _check_string_choices(path: str, value: str, description: dict[str, Any]) -> Problem | None:
    """Whether a string is one of the field's choices, or holds only the items a list field accepts."""
    choices = description.get("choices")
    if choices and value not in choices:
        return _not_in(path, value, choices)
    item_choices = description.get("item_choices")
    if not item_choices:
        return None
    # A string holds the list's items separated by spaces (transformers splits it).
    for word in value.split():
        if word not in item_choices:
            return _not_in(path, word, item_choices)
    return None


def _check_array_items(path: str, value: list[Any], description: dict[str, Any]) -> Problem | None:
    """Whether every item of a list has the item type the field takes, and is one of its item choices."""
    items = description.get("items")
    if not items:
        return None
    item_choices = description.get("item_choices")
    for index, item in enumerate(value):
        if not accepts([items], json_type_of(item)):
            return Problem(
                f"{path}[{index}]", f"{path}[{index}] must be {type_phrase([items])}, not {json.dumps(item)}"
            )
        if item_choices and item not in item_choices:
            return _not_in(f"{path}[{index}]", str(item), item_choices)
    return None


def _check_object_keys(path: str, value: dict[str, Any], description: dict[str, Any]) -> Problem | None:
    """Whether every key of an object is one the field's dataclass accepts."""
    keys = description.get("keys")
    if not keys:
        return None
    for key in value:
        if key not in keys:
            return Problem(f"{path}.{key}", f"{path}.{key} is not a key TRL accepts here{did_you_mean(key, keys)}")
    return None


def check_args(
    args: dict[str, Any],
    *,
    reward_count: int,
    has_eval_dataset: bool = False,
    device: str = "auto",
    processes: int = 1,
) -> list[Problem]:
    """Every problem TRL would raise (or silently misbehave on) for these GRPOConfig arguments."""
    fields = grpo_config_fields()
    problems: list[Problem] = []
    value_problems: list[Problem] = []
    for name, value in args.items():
        if name in SERVICE_MANAGED:
            problems.append(Problem(f"args.{name}", f"args.{name} is set by the service: {SERVICE_MANAGED[name]}"))
        elif name in NOT_SUPPORTED and value is not None and value != default(name):
            problems.append(Problem(f"args.{name}", f"args.{name}: {NOT_SUPPORTED[name]}; remove it"))
        elif name not in fields:
            problems.append(
                Problem(
                    f"args.{name}",
                    f"args.{name} is not a GRPOConfig field{did_you_mean(name, fields)}: see "
                    "https://huggingface.co/docs/trl/grpo_trainer for the fields TRL accepts",
                )
            )
        elif problem := _check_field(name, value, fields[name]):
            value_problems.append(problem)
    if value_problems:
        return problems + value_problems  # the cross-field rules need well-typed values
    known = {name: value for name, value in args.items() if name in fields}
    return problems + check_cross_field_rules(
        known, reward_count=reward_count, has_eval_dataset=has_eval_dataset, device=device, processes=processes
    )
