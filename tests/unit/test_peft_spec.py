"""`peft_config` (LoRA) validation: the stored description of LoraConfig matches the installed PEFT, good and bad
configs get the verdicts and messages a user needs, and PEFT builds an adapter on the tiny model from every value
the service accepts."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from shared.spec import peft
from shared.spec.job import JobSpec, parse_spec
from shared.spec.json_fields import render_description
from shared.spec.lora_config import (
    DESCRIPTION_PATH,
    describe_installed_lora_config,
    lora_config_fields,
)
from shared.spec.problems import SpecError
from tests.specs import job_spec

GOOD_CONFIG = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}


def lora_job(peft_config: dict[str, Any], args: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = job_spec("m", peft_config=peft_config)
    spec["args"].update(args or {})
    return spec


def problems_of(spec: dict[str, Any]) -> dict[str, str]:
    """{field: message} of every problem parse_spec finds (fails when it finds none)."""
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    return {p.field: p.message for p in caught.value.problems}


# --- The description -------------------------------------------------------------------------------------------


def test_stored_lora_description_matches_installed_peft() -> None:
    fresh = render_description(describe_installed_lora_config())
    assert DESCRIPTION_PATH.read_text() == fresh, (
        "shared/spec/lora_config_fields.json is out of date with the installed PEFT: "
        "run `python -m shared.spec.lora_config --write` and review the diff"
    )


def test_every_field_that_json_cannot_carry_is_refused_with_a_reason() -> None:
    fields = lora_config_fields()
    for policy in (peft.SERVICE_MANAGED, peft.NOT_SUPPORTED):
        assert set(policy) <= set(fields), set(policy) - set(fields)
    # A field typed as a Python object (an EvaConfig, ...) must be named in NOT_SUPPORTED, with its reason: a new
    # PEFT that adds one fails here instead of accepting a JSON object PEFT would refuse.
    objects_only = {name for name, d in fields.items() if set(d["types"]) <= {"null"}}
    assert objects_only <= set(peft.NOT_SUPPORTED), objects_only - set(peft.NOT_SUPPORTED)
    assert set(peft.ALIASES.values()) <= set(fields)


# --- Verdicts and messages -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {},
        GOOD_CONFIG,
        {**GOOD_CONFIG, "lora_dropout": 0.05, "task_type": "CAUSAL_LM", "bias": "none", "use_rslora": True},
        {"r": 16, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0], "layers_pattern": "layers"},
        {"r": 4, "target_modules": r".*\.(q|v)_proj", "use_dora": True, "init_lora_weights": "gaussian"},
        {"r": 8, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"q_proj": 8}, "init_lora_weights": "orthogonal"},
        {"task_type": None, "peft_type": "LORA", "inference_mode": False, "megatron_core": "megatron.core"},
    ],
)
def test_lora_configs_in_peft_names_are_accepted(config: dict[str, Any]) -> None:
    spec = parse_spec(lora_job(config))
    assert spec.peft_config == config


def test_no_peft_config_means_full_fine_tuning() -> None:
    assert parse_spec(job_spec("m")).peft_config is None
    assert parse_spec(job_spec("m", peft_config=None)).peft_config is None


@pytest.mark.parametrize(
    ("field", "suggested"),
    [
        ("lora_alpah", "lora_alpha"),
        ("alpha", "lora_alpha"),
        ("rank", "r"),
        ("lora_r", "r"),
        ("dropout", "lora_dropout"),
    ],
)
def test_an_unknown_field_gets_a_did_you_mean(field: str, suggested: str) -> None:
    message = problems_of(lora_job({field: 8}))[f"peft_config.{field}"]
    assert f"peft_config.{field} is not a LoraConfig field (did you mean '{suggested}'?" in message


def test_a_field_nothing_resembles_is_named_with_where_to_look() -> None:
    message = problems_of(lora_job({"r": 8, "zzz": 1}))["peft_config.zzz"]
    assert "did you mean" not in message and "https://huggingface.co/docs/peft" in message


@pytest.mark.parametrize("task_type", ["SEQ_CLS", "causal_lm", "FEATURE_EXTRACTION", "nonsense"])
def test_task_type_other_than_causal_lm_is_refused(task_type: str) -> None:
    message = problems_of(lora_job({"task_type": task_type}))["peft_config.task_type"]
    assert "GRPOTrainer trains causal language models: use 'CAUSAL_LM', or leave task_type out" in message
    if task_type == "causal_lm":
        assert "(did you mean 'CAUSAL_LM'?)" in message


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"r": "8"}, "r", 'peft_config.r must be an integer, not "8"'),
        ({"r": 8.5}, "r", "peft_config.r must be an integer, not 8.5"),
        ({"r": True}, "r", "peft_config.r must be an integer, not true"),
        ({"r": 0}, "r", "peft_config.r is 0: the rank of the adapter's matrices must be 1 or more"),
        ({"lora_alpha": 0}, "lora_alpha", "must be positive"),
        ({"lora_dropout": 1.5}, "lora_dropout", "is 1.5: a dropout probability is at least 0 and below 1"),
        ({"lora_dropout": "0.1"}, "lora_dropout", "must be a number"),
        ({"target_modules": 3}, "target_modules", "must be a string or a list or null, not 3"),
        ({"target_modules": ["q_proj", 1]}, "target_modules[1]", "peft_config.target_modules[1] must be a string"),
        ({"target_modules": "(q"}, "target_modules", "does not compile"),
        ({"bias": "some"}, "bias", "peft_config.bias is 'some'"),
        ({"init_lora_weights": "gausian"}, "init_lora_weights", "(did you mean 'gaussian'?)"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights", "rewrites the base model's weights"),
        ({"init_lora_weights": "pissa_niter_16"}, "init_lora_weights", "rewrites the base model's weights"),
        ({"init_lora_weights": "eva"}, "init_lora_weights", "initialize_lora_eva_weights"),
        ({"rank_pattern": {"q_proj": 0}}, "rank_pattern.q_proj", "a rank is an integer, 1 or more"),
        ({"layers_to_transform": -1, "target_modules": ["q_proj"]}, "layers_to_transform", "0 or more"),
        ({"layer_replication": [[2, 1]]}, "layer_replication[0]", "start < end"),
        ({"trainable_token_indices": {"embed_tokens": ["a"]}}, "trainable_token_indices.embed_tokens", "token ids"),
        ({"alora_invocation_tokens": []}, "alora_invocation_tokens", "is empty"),
        ({"inference_mode": True}, "inference_mode", "leaves the adapter nothing to train"),
        ({"peft_type": "IA3"}, "peft_type", "use 'LORA'"),
        ({"base_model_name_or_path": "x"}, "base_model_name_or_path", "is set by the service"),
        ({"revision": "main"}, "revision", "args.model_init_kwargs"),
        ({"eva_config": {"rho": 2}}, "eva_config", "is not supported"),
        ({"loftq_config": {"loftq_bits": 4}}, "loftq_config", "is not supported"),
        ({"runtime_config": {}}, "runtime_config", "is not supported"),
    ],
)
def test_bad_types_and_values_name_the_field_and_the_fix(config: dict[str, Any], field: str, expected: str) -> None:
    problems = problems_of(lora_job(config))
    assert expected in problems[f"peft_config.{field}"], problems


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"target_modules": "all-linear", "layers_to_transform": [0]}, "layers_to_transform", "list of module names"),
        ({"target_modules": "all-linear", "layers_pattern": "layers"}, "layers_pattern", "list of module names"),
        ({"target_modules": ["q_proj"], "layers_pattern": "layers"}, "layers_pattern", "needs layers_to_transform"),
        ({"target_modules": []}, "target_modules", "is empty, and no target_parameters are given"),
        ({"init_lora_weights": "orthogonal", "r": 7}, "r", "'orthogonal' needs an even rank"),
        ({"lora_bias": True, "init_lora_weights": "gaussian"}, "lora_bias", "only with init_lora_weights true or"),
        ({"lora_bias": True, "use_dora": True}, "lora_bias", "not supported with use_dora"),
    ],
)
def test_rules_across_fields_are_checked_at_submit(config: dict[str, Any], field: str, expected: str) -> None:
    assert expected in problems_of(lora_job(config))[f"peft_config.{field}"]


def test_sync_ref_model_is_refused_with_lora() -> None:
    message = problems_of(lora_job(GOOD_CONFIG, {"sync_ref_model": True}))["args.sync_ref_model"]
    assert "adapter disabled" in message
    parse_spec(lora_job(GOOD_CONFIG, {"sync_ref_model": False}))


def test_every_problem_is_reported_at_once_beside_the_args_problems() -> None:
    problems = problems_of(lora_job({"rank": 8, "lora_dropout": 2.0, "bias": 1}, {"num_generation": 4}))
    assert {"args.num_generation", "peft_config.rank", "peft_config.lora_dropout", "peft_config.bias"} <= set(problems)


# --- Agreement with the installed PEFT -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_model(tiny_model: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model)


def _peft_builds(config: dict[str, Any], base_model: Any, adapter: bool = True) -> bool:
    """Whether the installed PEFT takes this config as the worker passes it, and builds an adapter on the tiny
    model from it (with `adapter` false, only the LoraConfig)."""
    from peft import get_peft_model

    from worker.lora import build_lora_config

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lora_config = build_lora_config(JobSpec.model_validate(job_spec("m", peft_config=config)))
            assert lora_config is not None
            if adapter:
                get_peft_model(copy.deepcopy(base_model), lora_config)
    except (ValueError, TypeError, KeyError, IndexError, ImportError, AttributeError, re.error):
        return False
    return True


def _service_accepts(config: dict[str, Any]) -> bool:
    try:
        parse_spec(job_spec("m", peft_config=config))
    except SpecError:
        return False
    return True


# Configs whose verdicts must be the same, both ways: the rules across fields mirror PEFT's.
AGREEMENT_CASES: list[dict[str, Any]] = [
    {"target_modules": "all-linear", "layers_to_transform": [0]},
    {"target_modules": ["q_proj"], "layers_to_transform": [0]},
    {"target_modules": ["q_proj"], "layers_to_transform": 1, "layers_pattern": "layers"},
    {"target_modules": ["q_proj"], "layers_pattern": "layers"},
    {"init_lora_weights": "orthogonal", "r": 7},
    {"init_lora_weights": "orthogonal", "r": 8},
    {"lora_bias": True},
    {"lora_bias": True, "use_dora": True},
    {"lora_bias": True, "init_lora_weights": "gaussian"},
    {"target_modules": []},
    {"target_modules": [], "target_parameters": ["model.layers.0.mlp.up_proj.weight"]},
    {"r": 0},
    {"rank_pattern": {"q_proj": 0}},
    {"rank_pattern": {"q_proj": 4}, "alpha_pattern": {"q_proj": 2.5}},
    {"lora_dropout": 1.5},
    {"target_modules": "("},
    {"exclude_modules": "("},
    {"init_lora_weights": "nonsense"},
    {"target_modules": "all-linear", "use_dora": True, "use_rslora": True, "lora_dropout": 0.1, "bias": "lora_only"},
]


@pytest.mark.parametrize("config", AGREEMENT_CASES, ids=str)
def test_submit_time_rules_agree_with_peft(config: dict[str, Any], base_model: Any) -> None:
    assert _service_accepts(config) == _peft_builds(config, base_model)


# Values tried on every field alone; fields with choices also get each choice.
SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    8,
    1.5,
    0.5,
    "",
    "x",
    "all-linear",
    "q_proj",
    "none",
    [],
    ["x"],
    ["q_proj"],
    [0],
    [1.0],
    [[0, 1]],
    {},
    {"a": 1},
    {"q_proj": 4},
]
# Fields that name the model's modules, layers or tokens: PEFT builds the config, and only the worker, with the
# model loaded, can tell whether the names exist (a job naming none fails with PEFT's own message).
MODEL_DEPENDENT = {
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "modules_to_save",
    "target_parameters",
    "trainable_token_indices",
    "layer_replication",
}


@pytest.mark.parametrize("field", sorted(lora_config_fields()))
def test_peft_refuses_no_single_value_the_service_accepts(field: str, base_model: Any) -> None:
    description = lora_config_fields()[field]
    samples = SAMPLES + description.get("choices", [])
    accepted = [value for value in samples if _service_accepts({field: value})]
    refused_by_peft = [
        value
        for value in accepted
        if not _peft_builds({field: value}, base_model, adapter=field not in MODEL_DEPENDENT)
    ]
    assert refused_by_peft == [], f"the service accepts peft_config.{field} = {refused_by_peft} but PEFT refuses them"
