"""A description of TRL's `GRPOConfig` that the API validates `args` against, without importing TRL.

`grpo_config_fields.json` holds every field: the JSON types it takes, its choices, its default and its help. It
is generated from the installed TRL by `python -m shared.spec.grpo_config --write`; a unit test
regenerates it and fails when it drifts from the installed TRL.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.spec.json_fields import describe_fields, generate_description, read_fields

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


def _object_keys() -> dict[str, list[str]]:
    """Fields whose JSON object becomes a dataclass: the keys it accepts."""
    from transformers.trainer_pt_utils import AcceleratorConfig

    return {"accelerator_config": [f.name for f in dataclasses.fields(AcceleratorConfig)]}


def _item_choices() -> dict[str, list[str]]:
    """Fields typed as free strings or lists whose items transformers only takes from a fixed set."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return {"report_to": sorted([*INTEGRATION_TO_CALLBACK, "all", "none"])}


def describe_installed_grpo_config() -> dict[str, Any]:
    """Describe the installed TRL's GRPOConfig (imports TRL: for the generator and its test, never the API)."""
    import transformers
    import trl
    from trl import GRPOConfig

    object_keys = _object_keys()
    item_choices = _item_choices()

    # What GRPOConfig's annotations cannot say: TRL's and transformers' own choices and keys.
    def refine(name: str, annotation: Any, description: dict[str, Any]) -> None:
        description["types"] += [k for k in EXTRA_TYPES.get(name, []) if k not in description["types"]]
        if name in TRL_STRING_CHOICES:
            description["choices"] = TRL_STRING_CHOICES[name]
        if name in object_keys:
            description["keys"] = object_keys[name]
        if name in item_choices:
            description["item_choices"] = item_choices[name]

    return {
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "fields": describe_fields(GRPOConfig, refine=refine),
    }


@lru_cache(maxsize=1)
def grpo_config_fields() -> dict[str, dict[str, Any]]:
    """Every GRPOConfig field, as the committed description has it."""
    return read_fields(DESCRIPTION_PATH)


def default(name: str) -> Any:
    """The default TRL gives field `name`."""
    return grpo_config_fields()[name]["default"]


def main(argv: list[str]) -> int:
    """`python -m shared.spec.grpo_config --write` regenerates the description from the installed TRL."""
    return generate_description(argv, DESCRIPTION_PATH, describe_installed_grpo_config)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
