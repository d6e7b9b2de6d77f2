"""The rules across GRPOConfig's fields, for `shared.spec.grpo_args.check_args`.

TRL and transformers only enforce them when a job runs (`GRPOConfig.__post_init__`,
`TrainingArguments._validate_args`, `Trainer.__init__`, `GRPOTrainer.__init__`): checked here, a spec they would
reject is refused at submit time, each problem said with its fix. The values are already well typed (each field
passed `check_args`'s own check); a field the spec leaves out has TRL's default.
"""

from __future__ import annotations

import math
from typing import Any

from shared.spec.grpo_config import default
from shared.spec.problems import Problem

# Fields that need a GPU: refused at submit on a CPU-only deployment.
GPU_ONLY = ("bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "tf32")
# Learning-rate schedules that read an evaluation metric.
EVAL_SCHEDULES = ("reduce_lr_on_plateau", "greedy")
# The longest search for a suggested group size (the suggestion is a courtesy, not worth a slow request).
MAX_SUGGESTION_SEARCH = 10_000


class _Args:
    """A spec's args with TRL's defaults behind them."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.given = args

    def __getitem__(self, name: str) -> Any:
        return self.given[name] if name in self.given else default(name)

    def number(self, name: str) -> float | None:
        value = self[name]
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _first_multiples(start: int, step: int, count: int = 2) -> list[int]:
    first = (start // step + 1) * step
    return [first + i * step for i in range(count)]


def _group_size_for(generation_batch: int, num_generations: int) -> int | None:
    """A group size that divides the generation batch: the largest below num_generations, else the next above."""
    below = range(min(num_generations - 1, generation_batch), 1, -1)
    above = range(num_generations + 1, generation_batch + 1)
    for candidates in (below, above):
        for tried, size in enumerate(candidates):
            if tried >= MAX_SUGGESTION_SEARCH:
                break
            if generation_batch % size == 0:
                return size
    return None


def _batch_fixes(batch: int, accumulation: int, num_generations: int) -> str:
    """Suggest per-device batch sizes and group sizes that make the generation batch hold whole groups."""
    # batch x accumulation is a multiple of num_generations when batch is a multiple of this:
    batch_step = num_generations // math.gcd(accumulation, num_generations)
    fixes = [f"per_device_train_batch_size {' or '.join(str(s) for s in _first_multiples(batch, batch_step))}"]
    group = _group_size_for(batch * accumulation, num_generations)
    if group is not None:
        fixes.append(f"num_generations {group}")
    return "use " + ", or ".join(fixes)


def _check_batch_rules(args: _Args, processes: int) -> list[Problem]:
    """Whether the batch sizes are positive and every generation (and evaluation) batch holds whole groups."""
    if args["num_generations"] is None:
        return [Problem("args.num_generations", "args.num_generations cannot be null: give the group size (e.g. 8)")]
    # The divisibility rules below are meaningless (or divide by zero) until the sizes themselves are valid.
    if problems := _check_batch_minimums(args):
        return problems
    # A conflict in how the generation batch is sized hides the group rules: they depend on that size.
    if conflict := _check_generation_batch_size(args, processes):
        return [conflict]
    return [
        problem
        for problem in (_check_generation_groups(args, processes), _check_eval_groups(args, processes))
        if problem is not None
    ]


def _check_batch_minimums(args: _Args) -> list[Problem]:
    """Whether the per-device batch and accumulation steps are at least 1, and the group size at least 2."""
    num_generations = args["num_generations"]
    batch, accumulation = args["per_device_train_batch_size"], args["gradient_accumulation_steps"]
    problems = [
        Problem(f"args.{name}", f"args.{name} ({value}) must be at least 1")
        for name, value in (("per_device_train_batch_size", batch), ("gradient_accumulation_steps", accumulation))
        if value < 1
    ]
    if num_generations < 2:
        problems.append(
            Problem(
                "args.num_generations",
                f"args.num_generations ({num_generations}) must be at least 2: GRPO scores each completion against "
                "the others generated for the same prompt; 4 to 16 is usual (4-8 for simple tasks)",
            )
        )
    return problems


def _check_generation_batch_size(args: _Args, processes: int) -> Problem | None:
    """Whether the generation batch is sized one way only, and generation_batch_size fills whole global batches."""
    generation_batch_size, steps_per_generation = args["generation_batch_size"], args["steps_per_generation"]
    if generation_batch_size is not None and steps_per_generation is not None:
        return Problem(
            "args.generation_batch_size",
            "args.generation_batch_size and args.steps_per_generation cannot both be set: keep one",
        )
    batch = args["per_device_train_batch_size"]
    global_batch = batch * processes
    if generation_batch_size is None or generation_batch_size % global_batch == 0:
        return None
    return Problem(
        "args.generation_batch_size",
        f"args.generation_batch_size ({generation_batch_size}) must be divisible by the global batch "
        f"size (per_device_train_batch_size {batch} x {processes} process(es) = {global_batch})",
    )


def _check_generation_groups(args: _Args, processes: int) -> Problem | None:
    """Whether the generation batch, however it is sized, is a multiple of num_generations."""
    num_generations = args["num_generations"]
    batch, accumulation = args["per_device_train_batch_size"], args["gradient_accumulation_steps"]
    generation_batch_size, steps_per_generation = args["generation_batch_size"], args["steps_per_generation"]
    global_batch = batch * processes
    if generation_batch_size is not None:
        if generation_batch_size % num_generations == 0:
            return None
        return Problem(
            "args.generation_batch_size",
            f"args.generation_batch_size ({generation_batch_size}) must be divisible by args.num_generations "
            f"({num_generations}) so that every prompt's group is complete: "
            f"use a multiple of {num_generations}",
        )
    if steps_per_generation is not None:
        generation_batch = global_batch * steps_per_generation
        if generation_batch % num_generations == 0:
            return None
        return Problem(
            "args.steps_per_generation",
            f"the generation batch (per_device_train_batch_size {batch} x steps_per_generation "
            f"{steps_per_generation} = {generation_batch}) must be divisible by args.num_generations "
            f"({num_generations}): change either so the product is a multiple of {num_generations}",
        )
    # Neither is set: TRL generates once per optimizer step, for the accumulated batch.
    if (global_batch * accumulation) % num_generations == 0:
        return None
    if accumulation == 1:
        shown = f"args.per_device_train_batch_size ({batch})"
    else:
        shown = (
            f"the generation batch (per_device_train_batch_size {batch} x gradient_accumulation_steps "
            f"{accumulation} = {global_batch * accumulation})"
        )
    return Problem(
        "args.per_device_train_batch_size",
        f"{shown} must be divisible by args.num_generations ({num_generations}), so that every prompt's "
        "group of completions is generated together: " + _batch_fixes(global_batch, accumulation, num_generations),
    )


def _check_eval_groups(args: _Args, processes: int) -> Problem | None:
    """Whether the evaluation batch, when the job evaluates, is a multiple of the evaluation group size."""
    if args["eval_strategy"] == "no":
        return None
    eval_batch = args["per_device_eval_batch_size"]
    eval_generations = args["num_generations_eval"] or args["num_generations"]
    if (eval_batch * processes) % eval_generations == 0:
        return None
    return Problem(
        "args.per_device_eval_batch_size",
        f"args.per_device_eval_batch_size ({eval_batch}) must be divisible by the number of generations "
        f"used for evaluation ({eval_generations}): use a multiple of {eval_generations}",
    )


def _check_step_rules(args: _Args) -> list[Problem]:
    problems: list[Problem] = []
    for name, strategy in (
        ("logging_steps", "logging_strategy"),
        ("eval_steps", "eval_strategy"),
        ("save_steps", "save_strategy"),
    ):
        value = args.number(name)
        if value is not None and args[strategy] == "steps" and value > 1 and value != int(value):
            problems.append(Problem(f"args.{name}", f"args.{name} ({value}) must be a whole number when above 1"))
    if args["logging_strategy"] == "steps" and args.number("logging_steps") == 0:
        problems.append(Problem("args.logging_steps", "args.logging_steps must not be 0 with logging_strategy 'steps'"))
    empty_cache_steps = args["torch_empty_cache_steps"]
    if empty_cache_steps is not None and empty_cache_steps <= 0:
        problems.append(
            Problem("args.torch_empty_cache_steps", f"args.torch_empty_cache_steps ({empty_cache_steps}) must be > 0")
        )
    if (args.number("warmup_steps") or 0) < 0:
        problems.append(Problem("args.warmup_steps", f"args.warmup_steps ({args['warmup_steps']}) must be at least 0"))
    completion_length = args["max_completion_length"]
    if completion_length is not None and completion_length < 1:
        problems.append(
            Problem(
                "args.max_completion_length", f"args.max_completion_length ({completion_length}) must be at least 1"
            )
        )
    if args["dataloader_prefetch_factor"] is not None and args["dataloader_num_workers"] == 0:
        problems.append(
            Problem(
                "args.dataloader_prefetch_factor",
                "args.dataloader_prefetch_factor only applies with args.dataloader_num_workers > 0: "
                "set both or neither",
            )
        )
    pad = args["pad_to_multiple_of"]
    if isinstance(pad, str) and pad.lower() not in ("auto", "none", "null") and not pad.strip().isdigit():
        problems.append(
            Problem("args.pad_to_multiple_of", f"args.pad_to_multiple_of is {pad!r}: use an integer, 'auto' or null")
        )
    return problems


def _check_eval_rules(args: _Args, has_eval_dataset: bool) -> list[Problem]:
    problems: list[Problem] = []
    evaluates = args["eval_strategy"] != "no"
    if evaluates and not has_eval_dataset:
        problems.append(
            Problem(
                "args.eval_strategy",
                f"args.eval_strategy is {args['eval_strategy']!r} but the job has no eval_dataset: "
                "add an eval_dataset or set eval_strategy to 'no'",
            )
        )
    if args["lr_scheduler_type"] in EVAL_SCHEDULES and not evaluates:
        problems.append(
            Problem(
                "args.lr_scheduler_type",
                f"args.lr_scheduler_type {args['lr_scheduler_type']!r} follows an evaluation metric: set "
                "eval_strategy (and an eval_dataset), or choose another schedule",
            )
        )
    load_best = args["load_best_model_at_end"]
    if load_best and args["save_strategy"] != "best":
        if args["eval_strategy"] != args["save_strategy"]:
            problems.append(
                Problem(
                    "args.load_best_model_at_end",
                    "args.load_best_model_at_end needs save_strategy and eval_strategy to match "
                    f"(they are {args['save_strategy']!r} and {args['eval_strategy']!r}), or save_strategy 'best'",
                )
            )
        elif args["eval_strategy"] == "steps":
            save_steps, eval_steps = (
                args.number("save_steps"),
                args.number("eval_steps") or args.number("logging_steps"),
            )
            if save_steps and eval_steps and round(save_steps * 1e6) % round(eval_steps * 1e6) != 0:
                problems.append(
                    Problem(
                        "args.save_steps",
                        f"args.load_best_model_at_end needs save_steps ({save_steps}) to be a multiple of "
                        f"eval_steps ({eval_steps})",
                    )
                )
    metric_defaults = load_best or args["lr_scheduler_type"] in EVAL_SCHEDULES  # transformers then uses "loss"
    if args["save_strategy"] == "best" and args["metric_for_best_model"] is None and not metric_defaults:
        problems.append(
            Problem(
                "args.metric_for_best_model",
                "args.save_strategy 'best' needs args.metric_for_best_model (e.g. 'eval_reward') to know what is best",
            )
        )
    return problems


def _check_other_rules(args: _Args, reward_count: int, device: str) -> list[Problem]:
    """Whether the remaining single-purpose settings (precision, logging, rewards, vLLM, ranges) fit together."""
    return (
        _check_auto_find_batch_size(args)
        + _check_precision_rules(args, device)
        + _check_completion_logging(args)
        + _check_reward_weights(args, reward_count)
        + _check_importance_sampling_rules(args)
        + _check_reference_model(args)
        + _check_number_ranges(args)
    )


def _check_auto_find_batch_size(args: _Args) -> list[Problem]:
    """Whether auto_find_batch_size, which GRPO cannot use, is left off."""
    if not args["auto_find_batch_size"]:
        return []
    return [
        Problem(
            "args.auto_find_batch_size",
            "args.auto_find_batch_size is not supported by GRPO (shrinking the batch on out-of-memory breaks "
            "the groups of num_generations completions): remove it and lower per_device_train_batch_size instead",
        )
    ]


def _check_precision_rules(args: _Args, device: str) -> list[Problem]:
    """Whether one precision is chosen at a time, and GPU-only precisions are left out on a CPU-only deployment."""
    problems = [
        Problem(f"args.{half}", f"args.{half} and args.{other} are both true: choose one precision")
        for half, other in (("bf16", "fp16"), ("bf16_full_eval", "fp16_full_eval"))
        if args[half] and args[other]
    ]
    if device != "cpu":
        return problems
    # Only what the spec sets itself: left out, these follow the precision the service picks for the hardware.
    return problems + [
        Problem(
            f"args.{name}",
            f"args.{name}=true needs a GPU, and this deployment trains on CPUs only: remove args.{name} "
            "(the service picks bf16 on GPUs that support it and fp32 on CPUs)",
        )
        for name in GPU_ONLY
        if args.given.get(name)
    ]


def _check_completion_logging(args: _Args) -> list[Problem]:
    """Whether a hub repo for logged completions comes with log_completions on."""
    if args["log_completions_hub_repo"] is None or args["log_completions"]:
        return []
    return [
        Problem(
            "args.log_completions_hub_repo",
            "args.log_completions_hub_repo is set but args.log_completions is false: set log_completions to true",
        )
    ]


def _check_reward_weights(args: _Args, reward_count: int) -> list[Problem]:
    """Whether reward_weights, when given, has one weight per reward function."""
    weights = args["reward_weights"]
    if weights is None or len(weights) == reward_count:
        return []
    return [
        Problem(
            "args.reward_weights",
            f"args.reward_weights has {len(weights)} weight(s) but the job has {reward_count} reward function(s): "
            "give one weight per reward function, in the same order",
        )
    ]


def _check_importance_sampling_rules(args: _Args) -> list[Problem]:
    """Whether vLLM importance sampling's clip range is ordered, and a truncating mode has a bound to clip at."""
    problems: list[Problem] = []
    low, high = args["vllm_importance_sampling_clip_min"], args["vllm_importance_sampling_clip_max"]
    if low is not None and high is not None and low >= high:
        problems.append(
            Problem(
                "args.vllm_importance_sampling_clip_min",
                f"args.vllm_importance_sampling_clip_min ({low}) must be less than "
                f"args.vllm_importance_sampling_clip_max ({high})",
            )
        )
    mode = args["vllm_importance_sampling_mode"]
    if args["vllm_importance_sampling_correction"] and mode.endswith("_truncate") and low is None and high is None:
        problems.append(
            Problem(
                "args.vllm_importance_sampling_mode",
                f"args.vllm_importance_sampling_mode {mode!r} needs vllm_importance_sampling_clip_min or "
                "vllm_importance_sampling_clip_max: set one",
            )
        )
    return problems


def _check_reference_model(args: _Args) -> list[Problem]:
    """Whether sync_ref_model has a reference model to sync (TRL keeps one only when beta > 0)."""
    if not args["sync_ref_model"] or args["beta"]:
        return []
    return [
        Problem(
            "args.sync_ref_model",
            "args.sync_ref_model=true needs a reference model, which TRL only keeps when args.beta > 0: "
            "set beta (e.g. 0.04) or remove sync_ref_model",
        )
    ]


def _check_number_ranges(args: _Args) -> list[Problem]:
    """Whether learning_rate, beta and temperature are in range, and training has a length (epochs or steps)."""
    problems: list[Problem] = []
    for name, strictly_positive in (("learning_rate", False), ("beta", False), ("temperature", True)):
        value = args.number(name)
        if value is not None and (value < 0 or (strictly_positive and value == 0)):
            relation = "greater than 0" if strictly_positive else "at least 0"
            problems.append(Problem(f"args.{name}", f"args.{name} ({value}) must be {relation}"))
    if args["max_steps"] <= 0 and args["num_train_epochs"] <= 0:
        problems.append(
            Problem("args.num_train_epochs", "args.num_train_epochs must be positive unless args.max_steps is set")
        )
    return problems


def check_cross_field_rules(
    args: dict[str, Any],
    *,
    reward_count: int,
    has_eval_dataset: bool,
    device: str,
    processes: int,
) -> list[Problem]:
    """Every problem TRL would raise (or silently misbehave on) across these well-typed GRPOConfig arguments."""
    known = _Args(args)
    return (
        _check_batch_rules(known, processes)
        + _check_step_rules(known)
        + _check_eval_rules(known, has_eval_dataset)
        + _check_other_rules(known, reward_count, device)
    )
