"""`peft_config` of a job spec: PEFT's `LoraConfig` arguments, checked without importing PEFT.

A job with a `peft_config` trains a LoRA adapter on its `model` (TRL's `GRPOTrainer(peft_config=LoraConfig(...))`);
its checkpoints and final model are adapters. Field names, JSON types and choices come from the stored description
of the installed PEFT's LoraConfig (`shared.spec.lora_config`); beyond them, `check_peft_config` applies the
rules PEFT only enforces when the adapter is built (`LoraConfig.__post_init__`, `get_peft_model`) and says which
LoraConfig features the service leaves out, and why. A unit test builds a LoraConfig and an adapter on the tiny model
from every value the service accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from shared.spec.json_fields import accepts, json_type_of, type_phrase
from shared.spec.lora_config import lora_config_fields
from shared.spec.problems import Problem, did_you_mean

# GRPOTrainer trains causal language models: the worker builds every adapter with this task type.
TASK_TYPE = "CAUSAL_LM"
PEFT_TYPE = "LORA"

# Fields the service fills in itself; a spec that sets them is told why.
SERVICE_MANAGED: dict[str, str] = {
    "base_model_name_or_path": "the adapter's base model is the job's `model`, which PEFT records in the adapter",
    "revision": "the adapter's base model is the job's `model`, loaded as args.model_init_kwargs says (its "
    "`revision` included)",
    "peft_version": "PEFT records its own version in the adapter",
    "auto_mapping": "PEFT fills it in when it saves the adapter",
}
# Fields that take a Python object, or need a step the service does not run: only their default is accepted.
NOT_SUPPORTED: dict[str, str] = {
    "megatron_config": "Megatron's parallel layers are not used by the service",
    "megatron_core": "Megatron's parallel layers are not used by the service",
    "loftq_config": "LoftQ quantizes the base model's weights, so the adapter would no longer apply to the job's model",
    "eva_config": "EVA needs a data-driven initialisation pass (peft.initialize_lora_eva_weights) that GRPOTrainer "
    "does not run",
    "corda_config": "CorDA rewrites the base model's weights, so the adapter would no longer apply to the job's model",
    "lora_ga_config": "LoRA-GA rewrites the base model's weights, so the adapter would no longer apply to the job's "
    "model",
    "monteclora_config": "LoRA variants configured by a PEFT config object are not offered by the service",
    "velora_config": "LoRA variants configured by a PEFT config object are not offered by the service",
    "kasa_config": "KaSA rewrites the base model's weights, so the adapter would no longer apply to the job's model",
    "use_bdlora": "LoRA variants configured by a PEFT config object are not offered by the service",
    "arrow_config": "Arrow routes between several trained adapters, and a job trains one",
    "runtime_config": "it takes a Python object (LoraRuntimeConfig)",
}
# NOT_SUPPORTED fields that PEFT also takes as null.
NULLABLE_OBJECTS = {"megatron_core"}
# Fields typed `Optional[dict]` whose null PEFT nevertheless fails on: `{}` is their default.
NOT_NULL = {"rank_pattern", "alpha_pattern"}
# Other names for LoraConfig fields that users bring from elsewhere (TRL's command line, other trainers).
ALIASES: dict[str, str] = {
    "rank": "r",
    "lora_r": "r",
    "alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_modules_to_save": "modules_to_save",
    "lora_task_type": "task_type",
}
# init_lora_weights: what the service accepts, and why it refuses the rest.
INIT_ACCEPTED: list[bool | str] = [True, False, "gaussian", "orthogonal", "mica"]
_REWRITES_BASE = (
    "initialisation rewrites the base model's weights, so the adapter would no longer apply to the job's model "
    "(and GRPO's reference, the model with its adapter disabled, would not be that model)"
)
INIT_REFUSED: dict[str, str] = {
    "pissa": _REWRITES_BASE,
    "olora": _REWRITES_BASE,
    "corda": _REWRITES_BASE,
    "loftq": _REWRITES_BASE,
    "eva": "initialisation needs a data-driven pass (peft.initialize_lora_eva_weights) that GRPOTrainer does not run",
}
PISSA_NITER = re.compile(r"pissa_niter_\d+")


def _problem(name: str, message: str) -> Problem:
    return Problem(f"peft_config.{name}", f"peft_config.{name} {message}")


def _show(value: Any) -> str:
    return json.dumps(value)


# --- One field ------------------------------------------------------------------------------------------------


def _check_type(name: str, value: Any, description: dict[str, Any]) -> Problem | None:
    """The JSON type (and item type) the installed LoraConfig declares for the field."""
    kinds = [k for k in description["types"] if not (k == "null" and name in NOT_NULL)]
    if not accepts(kinds, json_type_of(value)):
        return _problem(name, f"must be {type_phrase(kinds)}, not {_show(value)}")
    items = description.get("items")
    if items and isinstance(value, list):
        for index, item in enumerate(value):
            if not accepts([items], json_type_of(item)):
                return Problem(
                    f"peft_config.{name}[{index}]",
                    f"peft_config.{name}[{index}] must be {type_phrase([items])}, not {_show(item)}",
                )
    choices = description.get("choices")
    own_rules = ("task_type", "peft_type", "init_lora_weights")  # see _check_field
    if choices and isinstance(value, str) and value not in choices and name not in own_rules:
        listed = ", ".join(repr(c) for c in choices)
        return _problem(name, f"is {value!r}{did_you_mean(value, choices)}: use one of {listed}")
    return None


def _check_regex(name: str, value: Any) -> Problem | None:
    """A string `target_modules` / `exclude_modules` is a regular expression PEFT matches module names against."""
    if not isinstance(value, str) or value == "all-linear":
        return None
    try:
        re.compile(value)
    except re.error as error:
        return _problem(
            name,
            f"is {value!r}, which PEFT reads as a regular expression, and it does not compile ({error}): fix it, or "
            "give a list of module names",
        )
    return None


def _check_choice(name: str, value: Any, accepted: list[Any], reason: str) -> Problem | None:
    if value is None or value in accepted:
        return None
    suggestion = ""
    if isinstance(value, str):
        suggestion = did_you_mean(value.upper(), [a for a in accepted if isinstance(a, str)])
    return _problem(name, f"is {_show(value)}{suggestion}: {reason}")


def _check_init(value: Any) -> Problem | None:
    if value in INIT_ACCEPTED:
        return None
    accepted = ", ".join(_show(v) for v in INIT_ACCEPTED)
    kind = "pissa" if isinstance(value, str) and PISSA_NITER.fullmatch(value) else value
    if kind in INIT_REFUSED:
        return _problem("init_lora_weights", f"is {value!r}: that {INIT_REFUSED[kind]}; use one of {accepted}")
    known = [str(v) for v in INIT_ACCEPTED if isinstance(v, str)]
    return _problem("init_lora_weights", f"is {_show(value)}{did_you_mean(str(value), known)}: use one of {accepted}")


def _non_negative_ints(name: str, values: list[Any]) -> Problem | None:
    negative = [v for v in values if v < 0]
    if negative:
        return _problem(name, f"holds {negative[0]}: layer and token indices are 0 or more")
    return None


def _check_rank(name: str, value: int) -> Problem | None:
    """Whether the adapter's rank `r` is 1 or more."""
    if value < 1:
        return _problem(name, f"is {value}: the rank of the adapter's matrices must be 1 or more (8 or 16 are common)")
    return None


def _check_alpha(name: str, value: float) -> Problem | None:
    """Whether `lora_alpha`, the scale of the adapter's update, is positive."""
    if value <= 0:
        return _problem(
            name,
            f"is {value}: the adapter's update is scaled by lora_alpha / r, so it must be positive (often r or 2 x r)",
        )
    return None


def _check_dropout(name: str, value: float) -> Problem | None:
    """Whether `lora_dropout` is a dropout probability: at least 0 and below 1."""
    if not 0 <= value < 1:
        return _problem(name, f"is {value}: a dropout probability is at least 0 and below 1 (0.05 is usual)")
    return None


def _check_group_size(name: str, value: int) -> Problem | None:
    """Whether `qalora_group_size` is 1 or more."""
    if value < 1:
        return _problem(name, f"is {value}: a group size is 1 or more")
    return None


def _check_layers_to_transform(name: str, value: int | list[Any] | None) -> Problem | None:
    """Whether the layer indices `layers_to_transform` holds (one, or a list) are 0 or more."""
    if value is None:
        return None
    return _non_negative_ints(name, value if isinstance(value, list) else [value])


def _check_invocation_tokens(name: str, value: list[Any] | None) -> Problem | None:
    """Whether `alora_invocation_tokens`, when given, lists token ids, each 0 or more."""
    if value is None:
        return None
    if not value:
        return _problem(name, "is empty: list the token ids of the invocation string, or remove it")
    return _non_negative_ints(name, value)


def _check_rank_pattern(name: str, value: dict[str, Any] | None) -> Problem | None:
    """Whether every rank in `rank_pattern` is an integer, 1 or more."""
    if not value:
        return None
    for key, rank in value.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            return Problem(
                f"peft_config.{name}.{key}",
                f"peft_config.{name}.{key} is {_show(rank)}: a rank is an integer, 1 or more",
            )
    return None


def _check_alpha_pattern(name: str, value: dict[str, Any] | None) -> Problem | None:
    """Whether every alpha in `alpha_pattern` is a positive number."""
    if not value:
        return None
    for key, alpha in value.items():
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
            return Problem(
                f"peft_config.{name}.{key}",
                f"peft_config.{name}.{key} is {_show(alpha)}: an alpha is a positive number",
            )
    return None


def _check_token_indices(name: str, value: list[Any] | dict[str, Any] | None) -> Problem | None:
    """Whether `trainable_token_indices` (a list, or a list per layer name) holds token ids, each 0 or more."""
    if value is None:
        return None
    groups = value.items() if isinstance(value, dict) else [("", value)]
    for layer, indices in groups:
        field = f"{name}.{layer}" if layer else name
        ints = isinstance(indices, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
        if not ints:
            return _problem(field, f"must be a list of token ids (integers), not {_show(indices)}")
        if problem := _non_negative_ints(field, indices):
            return problem
    return None


def _check_layer_replication(name: str, value: list[Any] | None) -> Problem | None:
    """Whether each item of `layer_replication` is a [start, end] range of layer indices with start < end."""
    if value is None:
        return None
    for index, pair in enumerate(value):
        is_pair = (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)
        )
        if not is_pair or pair[0] >= pair[1]:
            return Problem(
                f"peft_config.{name}[{index}]",
                f"peft_config.{name}[{index}] is {_show(pair)}: each item is a [start, end] range of "
                "layer indices with start < end, such as [0, 4]",
            )
    return None


# The rule of each field that has one beyond its JSON type; called with the field's name and its well-typed value.
_VALUE_CHECKS: dict[str, Callable[[str, Any], Problem | None]] = {
    "r": _check_rank,
    "lora_alpha": _check_alpha,
    "lora_dropout": _check_dropout,
    "qalora_group_size": _check_group_size,
    "target_modules": _check_regex,
    "exclude_modules": _check_regex,
    "layers_to_transform": _check_layers_to_transform,
    "alora_invocation_tokens": _check_invocation_tokens,
    "rank_pattern": _check_rank_pattern,
    "alpha_pattern": _check_alpha_pattern,
    "trainable_token_indices": _check_token_indices,
    "layer_replication": _check_layer_replication,
}


def _check_value(name: str, value: Any) -> Problem | None:
    """Rules on one well-typed value that PEFT (or torch under it) enforces when it builds the adapter."""
    check = _VALUE_CHECKS.get(name)
    return check(name, value) if check is not None else None


# --- Rules across fields --------------------------------------------------------------------------------------


def _check_rules(config: dict[str, Any], args: dict[str, Any]) -> list[Problem]:
    """The rules of LoraConfig.__post_init__ and get_peft_model across fields, and GRPOTrainer's with PEFT."""
    fields = lora_config_fields()

    def value(name: str) -> Any:
        return config[name] if name in config else fields[name]["default"]

    problems: list[Problem] = []
    target_modules = value("target_modules")
    if isinstance(target_modules, str):
        for name in ("layers_to_transform", "layers_pattern"):
            if value(name) is not None:
                problems.append(
                    _problem(
                        name,
                        f"cannot be used with a string target_modules ({target_modules!r}): PEFT takes it only with "
                        'a list of module names, such as ["q_proj", "v_proj"]',
                    )
                )
    elif value("layers_pattern") and value("layers_to_transform") is None:
        problems.append(_problem("layers_pattern", "needs layers_to_transform: set it, or remove layers_pattern"))
    if target_modules == [] and not value("target_parameters"):
        problems.append(
            _problem(
                "target_modules",
                'is empty, and no target_parameters are given: name the modules to adapt (such as "all-linear"), '
                "or leave target_modules out for PEFT's default for the model",
            )
        )
    init = value("init_lora_weights")
    if init == "orthogonal" and value("r") % 2:
        problems.append(_problem("r", f"is {value('r')}: init_lora_weights 'orthogonal' needs an even rank"))
    if value("lora_bias"):
        if not isinstance(init, bool):
            problems.append(
                _problem("lora_bias", f"works only with init_lora_weights true or false, not {init!r}: remove one")
            )
        if value("use_dora"):
            problems.append(_problem("lora_bias", "is not supported with use_dora (DoRA): remove one of them"))
    if args.get("sync_ref_model"):
        problems.append(
            Problem(
                "args.sync_ref_model",
                "args.sync_ref_model cannot be used with a peft_config: with LoRA, GRPO's reference is the model with "
                "its adapter disabled, so there is no reference model to sync (TRL refuses it); remove one",
            )
        )
    return problems


def check_peft_config(config: dict[str, Any], args: dict[str, Any]) -> list[Problem]:
    """Every problem PEFT (or TRL with PEFT) would raise when building this LoraConfig for `GRPOTrainer`, and every
    LoraConfig feature the service does not offer, each said with its fix. `args` are the job's GRPOConfig args."""
    fields = lora_config_fields()
    problems: list[Problem] = []
    value_problems: list[Problem] = []
    for name, given in config.items():
        if name in SERVICE_MANAGED:
            problems.append(_problem(name, f"is set by the service: {SERVICE_MANAGED[name]}; remove it"))
        elif name in NOT_SUPPORTED:
            if given != fields[name]["default"] and not (given is None and name in NULLABLE_OBJECTS):
                problems.append(_problem(name, f"is not supported: {NOT_SUPPORTED[name]}; remove it"))
        elif name not in fields:
            hint = (
                f" (did you mean '{ALIASES[name]}'? peft_config uses PEFT's LoraConfig names)"
                if name in ALIASES
                else did_you_mean(name, fields) or did_you_mean(f"lora_{name}", fields)
            )
            problems.append(
                _problem(
                    name,
                    f"is not a LoraConfig field{hint}: see https://huggingface.co/docs/peft/package_reference/lora "
                    "for the fields PEFT accepts",
                )
            )
        elif problem := _check_type(name, given, fields[name]) or _check_field(name, given):
            value_problems.append(problem)
    if value_problems:
        return problems + value_problems  # the rules across fields need well-typed values
    known = {name: given for name, given in config.items() if name in fields}
    return problems + _check_rules(known, args)


def _check_field(name: str, value: Any) -> Problem | None:
    if name == "task_type":
        return _check_choice(
            name,
            value,
            [TASK_TYPE],
            f"GRPOTrainer trains causal language models: use {TASK_TYPE!r}, or leave task_type out (the service sets "
            "it)",
        )
    if name == "peft_type":
        return _check_choice(
            name,
            value,
            [PEFT_TYPE],
            f"peft_config is a LoRA adapter (PEFT's LoraConfig), the only kind the service trains: use {PEFT_TYPE!r}, "
            "or leave peft_type out",
        )
    if name == "inference_mode" and value:
        return _problem(name, "is true, which leaves the adapter nothing to train: remove it")
    if name == "init_lora_weights":
        return _check_init(value)
    return _check_value(name, value)
