"""`args` of a job spec, checked against TRL's `GRPOConfig` without importing TRL.

The API must start fast and never import torch, so it validates against `grpo_config_fields.json`: a description
of every `GRPOConfig` field (JSON types, choices, default, help) generated from the installed TRL by
`python -m shared.grpo_args --write`. A unit test regenerates it and fails when it drifts from the installed TRL.

Besides types and choices, `check_args` applies the rules TRL only enforces at run time (in
`GRPOConfig.__post_init__` and `GRPOTrainer.__init__`), so a spec TRL would reject is refused at submit time.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.problems import Problem, did_you_mean

DESCRIPTION_PATH = Path(__file__).with_name("grpo_config_fields.json")

# GRPOConfig fields typed plain `str` that TRL nevertheless only accepts from a fixed set (its help text lists
# them). The sync test checks each choice still appears in the installed TRL's help for the field.
TRL_STRING_CHOICES: dict[str, list[str]] = {
    "loss_type": ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"],
    "scale_rewards": ["group", "batch", "none"],
    "importance_sampling_level": ["token", "sequence"],
    "multi_objective_aggregation": ["sum_then_normalize", "normalize_then_sum"],
    "vllm_mode": ["server", "colocate"],
    "vllm_model_impl": ["transformers", "vllm"],
    "vllm_importance_sampling_mode": ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"],
}

# TRL maps `scale_rewards=True/False` to "group"/"none" although the field is typed `str`.
EXTRA_TYPES: dict[str, list[str]] = {"scale_rewards": ["boolean"]}

# Fields the service sets itself; a spec that sets them is told why.
SERVICE_MANAGED: dict[str, str] = {
    "output_dir": "the service writes each job's checkpoints and final model to the job's own data dir: remove it",
}

DEVICE_PRECISIONS = ("bf16", "fp16")


# --- The description (generated from the installed TRL) -----------------------------------------------------


def _json_types(annotation: Any) -> tuple[list[str], list[Any] | None, str | None]:
    """JSON types a field accepts, the choices of its enum (if any), and the JSON type of its list items."""
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    kinds: list[str] = []
    choices: list[Any] | None = None
    items: str | None = None
    for member in members:
        origin = typing.get_origin(member) or member
        if member is type(None):
            kind = "null"
        elif origin is typing.Literal:
            literal_values = list(typing.get_args(member))
            kind = "boolean" if all(isinstance(v, bool) for v in literal_values) else "string"
        elif origin is bool:
            kind = "boolean"
        elif origin is int:
            kind = "integer"
        elif origin is float:
            kind = "number"
        elif origin is str:
            kind = "string"
        elif origin is dict:
            kind = "object"
        elif origin is list:
            kind = "array"
            (item_type,) = typing.get_args(member) or (Any,)
            if isinstance(item_type, type) and issubclass(item_type, enum.Enum):
                items = "string"
            else:
                item_kinds = _json_types(item_type)[0] if item_type is not Any else []
                items = item_kinds[0] if len(item_kinds) == 1 else None
        elif isinstance(origin, type) and issubclass(origin, enum.Enum):
            kind = "string"
            choices = [m.value for m in origin]
        else:
            continue  # a Python object (e.g. accelerate's ParallelismConfig) that JSON cannot describe
        if kind not in kinds:
            kinds.append(kind)
    return kinds, choices, items


def _json_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is dataclasses.MISSING:
        return None
    value = field.default
    if isinstance(value, enum.Enum):
        return value.value
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def describe_installed_grpo_config() -> dict[str, Any]:
    """Describe the installed TRL's GRPOConfig (imports TRL: for the generator and its test, never the API)."""
    import transformers
    import trl
    from trl import GRPOConfig

    hints = typing.get_type_hints(GRPOConfig)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(GRPOConfig):
        if not field.init or field.name.startswith("_"):
            continue
        kinds, choices, items = _json_types(hints[field.name])
        kinds += [k for k in EXTRA_TYPES.get(field.name, []) if k not in kinds]
        description: dict[str, Any] = {"types": kinds, "default": _json_default(field)}
        if field.name in TRL_STRING_CHOICES:
            choices = TRL_STRING_CHOICES[field.name]
        if choices is not None:
            description["choices"] = choices
        if items is not None:
            description["items"] = items
        description["help"] = " ".join(str(field.metadata.get("help", "")).split())
        fields[field.name] = description
    return {"trl_version": trl.__version__, "transformers_version": transformers.__version__, "fields": fields}


def render_description(description: dict[str, Any]) -> str:
    """The description as the committed file holds it."""
    return json.dumps(description, indent=1, sort_keys=True) + "\n"


@lru_cache(maxsize=1)
def grpo_config_fields() -> dict[str, dict[str, Any]]:
    """Every GRPOConfig field, as the committed description has it."""
    fields: dict[str, dict[str, Any]] = json.loads(DESCRIPTION_PATH.read_text())["fields"]
    return fields


def default(name: str) -> Any:
    """The default TRL gives field `name`."""
    return grpo_config_fields()[name]["default"]


# --- Checking a spec's args -------------------------------------------------------------------------------------


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _accepts(kinds: list[str], value_type: str) -> bool:
    # JSON has one number type: an integer is a fine value for a float field.
    return value_type in kinds or (value_type == "integer" and "number" in kinds)


def _type_phrase(kinds: list[str]) -> str:
    names = {
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "string": "a string",
        "object": "an object",
        "array": "a list",
        "null": "null",
    }
    return " or ".join(names[k] for k in kinds)


def _check_field(name: str, value: Any, description: dict[str, Any]) -> Problem | None:
    path = f"args.{name}"
    kinds: list[str] = description["types"]
    value_type = _json_type_of(value)
    if not kinds:
        return Problem(path, f"{path} cannot be set through a JSON spec (GRPOConfig takes a Python object): remove it")
    if not _accepts(kinds, value_type):
        return Problem(path, f"{path} must be {_type_phrase(kinds)}, not {json.dumps(value)}")
    choices = description.get("choices")
    if choices and value_type == "string" and value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        return Problem(
            path, f"{path} is {value!r}, which TRL does not accept{did_you_mean(value, choices)}: use one of {listed}"
        )
    items = description.get("items")
    if items and value_type == "array":
        for index, item in enumerate(value):
            if not _accepts([items], _json_type_of(item)):
                return Problem(
                    f"{path}[{index}]", f"{path}[{index}] must be {_type_phrase([items])}, not {json.dumps(item)}"
                )
    return None


def _batch_fixes(batch: int, accumulation: int, num_generations: int) -> str:
    """Suggest per-device batch sizes and group sizes that make the generation batch hold whole groups."""
    sizes = [b for b in range(batch + 1, batch + 4 * num_generations + 1) if (b * accumulation) % num_generations == 0]
    generation_batch = batch * accumulation
    groups = [g for g in range(2, generation_batch + 1) if generation_batch % g == 0]
    fixes = []
    if sizes:
        fixes.append(f"per_device_train_batch_size {' or '.join(str(s) for s in sizes[:2])}")
    if groups:
        fixes.append(f"num_generations {groups[-1] if groups[-1] < num_generations else groups[0]}")
    return "use " + ", or ".join(fixes) if fixes else "make the batch a multiple of num_generations"


def _int(args: dict[str, Any], name: str) -> int | None:
    """The integer value of a field (given or TRL's default), or None when it is not an integer."""
    value = args.get(name, default(name))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_batch_rules(args: dict[str, Any], processes: int, has_eval_dataset: bool) -> list[Problem]:
    problems: list[Problem] = []
    num_generations = _int(args, "num_generations")
    batch = _int(args, "per_device_train_batch_size")
    accumulation = _int(args, "gradient_accumulation_steps")
    if "num_generations" in args and args["num_generations"] is None:
        return [Problem("args.num_generations", "args.num_generations cannot be null: give the group size (e.g. 8)")]
    if num_generations is None or batch is None or accumulation is None:
        return problems  # a type problem was already reported

    for name, value in (("per_device_train_batch_size", batch), ("gradient_accumulation_steps", accumulation)):
        if value < 1:
            problems.append(Problem(f"args.{name}", f"args.{name} ({value}) must be at least 1"))
    if num_generations < 2:
        problems.append(
            Problem(
                "args.num_generations",
                f"args.num_generations ({num_generations}) must be at least 2: GRPO scores each completion against "
                "the others generated for the same prompt; 4 to 16 is usual (4-8 for simple tasks)",
            )
        )
    if problems:
        return problems

    generation_batch_size = args.get("generation_batch_size")
    steps_per_generation = args.get("steps_per_generation")
    global_batch = batch * processes
    if generation_batch_size is not None and steps_per_generation is not None:
        return [
            Problem(
                "args.generation_batch_size",
                "args.generation_batch_size and args.steps_per_generation cannot both be set: keep one",
            )
        ]
    if isinstance(generation_batch_size, int):
        if generation_batch_size % global_batch != 0:
            return [
                Problem(
                    "args.generation_batch_size",
                    f"args.generation_batch_size ({generation_batch_size}) must be divisible by the global batch "
                    f"size (per_device_train_batch_size {batch} x {processes} process(es) = {global_batch})",
                )
            ]
        if generation_batch_size % num_generations != 0:
            problems.append(
                Problem(
                    "args.generation_batch_size",
                    f"args.generation_batch_size ({generation_batch_size}) must be divisible by args.num_generations "
                    f"({num_generations}) so that every prompt's group is complete: "
                    f"use a multiple of {num_generations}",
                )
            )
    elif isinstance(steps_per_generation, int):
        generation_batch = global_batch * steps_per_generation
        if generation_batch % num_generations != 0:
            problems.append(
                Problem(
                    "args.steps_per_generation",
                    f"the generation batch (per_device_train_batch_size {batch} x steps_per_generation "
                    f"{steps_per_generation} = {generation_batch}) must be divisible by args.num_generations "
                    f"({num_generations}): change either so the product is a multiple of {num_generations}",
                )
            )
    elif (global_batch * accumulation) % num_generations != 0:
        generation_batch = global_batch * accumulation
        if accumulation == 1:
            shown = f"args.per_device_train_batch_size ({batch})"
        else:
            shown = (
                f"the generation batch (per_device_train_batch_size {batch} x gradient_accumulation_steps "
                f"{accumulation} = {generation_batch})"
            )
        problems.append(
            Problem(
                "args.per_device_train_batch_size",
                f"{shown} must be divisible by args.num_generations ({num_generations}), so that every prompt's "
                "group of completions is generated together: "
                + _batch_fixes(global_batch, accumulation, num_generations),
            )
        )

    eval_strategy = args.get("eval_strategy", default("eval_strategy"))
    if has_eval_dataset and eval_strategy != "no":
        eval_batch = _int(args, "per_device_eval_batch_size")
        eval_generations = _int(args, "num_generations_eval") or num_generations
        if eval_batch is not None and (eval_batch * processes) % eval_generations != 0:
            problems.append(
                Problem(
                    "args.per_device_eval_batch_size",
                    f"args.per_device_eval_batch_size ({eval_batch}) must be divisible by the number of generations "
                    f"used for evaluation ({eval_generations}): use a multiple of {eval_generations}",
                )
            )
    return problems


def _check_other_rules(args: dict[str, Any], reward_count: int, device: str) -> list[Problem]:
    problems: list[Problem] = []
    get = lambda name: args.get(name, default(name))  # noqa: E731

    if get("auto_find_batch_size"):
        problems.append(
            Problem(
                "args.auto_find_batch_size",
                "args.auto_find_batch_size is not supported by GRPO (shrinking the batch on out-of-memory breaks "
                "the groups of num_generations completions): remove it and lower per_device_train_batch_size instead",
            )
        )
    if get("bf16") and get("fp16"):
        problems.append(Problem("args.bf16", "args.bf16 and args.fp16 are both true: choose one precision"))
    if device == "cpu":
        for name in DEVICE_PRECISIONS:
            if args.get(name):
                problems.append(
                    Problem(
                        f"args.{name}",
                        f"args.{name}=true needs a GPU, and this deployment trains on CPUs only: remove args.{name} "
                        "(the service picks bf16 on GPUs that support it and fp32 on CPUs)",
                    )
                )
    if get("log_completions_hub_repo") is not None and not get("log_completions"):
        problems.append(
            Problem(
                "args.log_completions_hub_repo",
                "args.log_completions_hub_repo is set but args.log_completions is false: set log_completions to true",
            )
        )
    weights = args.get("reward_weights")
    if isinstance(weights, list) and len(weights) != reward_count:
        problems.append(
            Problem(
                "args.reward_weights",
                f"args.reward_weights has {len(weights)} weight(s) but the job has {reward_count} reward function(s): "
                "give one weight per reward function, in the same order",
            )
        )
    low, high = get("vllm_importance_sampling_clip_min"), get("vllm_importance_sampling_clip_max")
    if isinstance(low, int | float) and isinstance(high, int | float) and low >= high:
        problems.append(
            Problem(
                "args.vllm_importance_sampling_clip_min",
                f"args.vllm_importance_sampling_clip_min ({low}) must be less than "
                f"args.vllm_importance_sampling_clip_max ({high})",
            )
        )
    mode = get("vllm_importance_sampling_mode")
    if get("vllm_importance_sampling_correction") and str(mode).endswith("_truncate") and low is None and high is None:
        problems.append(
            Problem(
                "args.vllm_importance_sampling_mode",
                f"args.vllm_importance_sampling_mode {mode!r} needs vllm_importance_sampling_clip_min or "
                "vllm_importance_sampling_clip_max: set one",
            )
        )
    if get("sync_ref_model") and not get("beta"):
        problems.append(
            Problem(
                "args.sync_ref_model",
                "args.sync_ref_model=true needs a reference model, which TRL only keeps when args.beta > 0: "
                "set beta (e.g. 0.04) or remove sync_ref_model",
            )
        )
    for name, strictly_positive in (
        ("learning_rate", False),
        ("beta", False),
        ("temperature", True),
        ("logging_steps", True),
    ):
        value = args.get(name)
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (value < 0 or (strictly_positive and value == 0))
        ):
            relation = "greater than 0" if strictly_positive else "at least 0"
            problems.append(Problem(f"args.{name}", f"args.{name} ({value}) must be {relation}"))
    max_steps, epochs = get("max_steps"), get("num_train_epochs")
    if isinstance(max_steps, int) and max_steps <= 0 and isinstance(epochs, int | float) and epochs <= 0:
        problems.append(
            Problem("args.num_train_epochs", "args.num_train_epochs must be positive unless args.max_steps is set")
        )
    return problems


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
    return (
        problems
        + _check_batch_rules(known, processes, has_eval_dataset)
        + _check_other_rules(known, reward_count, device)
    )


def main(argv: list[str]) -> int:
    """`python -m shared.grpo_args --write` regenerates the description from the installed TRL."""
    rendered = render_description(describe_installed_grpo_config())
    if argv[1:] == ["--write"]:
        DESCRIPTION_PATH.write_text(rendered)
        print(f"wrote {DESCRIPTION_PATH}")
        return 0
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
