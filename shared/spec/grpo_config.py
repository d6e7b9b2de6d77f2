"""A description of TRL's `GRPOConfig` that the API validates `args` against, without importing TRL.

`grpo_config_fields.json` holds every field: the JSON types it takes, its choices, its default and its help. It
is generated from the installed TRL by `python -m shared.spec.grpo_config --write`; a unit test
regenerates it and fails when it drifts from the installed TRL.
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


JSON_TYPE_ORDER = ["boolean", "integer", "number", "string", "array", "object", "null"]


def _json_types(annotation: Any) -> dict[str, Any]:
    """`types` (JSON types a field accepts), `choices` (of an enum), `items` and `item_choices` (of a list)."""
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    described: dict[str, Any] = {"types": []}
    for member in members:
        origin = typing.get_origin(member) or member
        if member is type(None):
            kind = "null"
        elif origin is typing.Literal:
            kind = "boolean" if all(isinstance(v, bool) for v in typing.get_args(member)) else "string"
        elif origin in (bool, int, float, str, dict):
            kind = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}[origin]
        elif origin is list:
            kind = "array"
            (item_type,) = typing.get_args(member) or (Any,)
            if isinstance(item_type, type) and issubclass(item_type, enum.Enum):
                described["items"] = "string"
                described["item_choices"] = [m.value for m in item_type]
            elif item_type is not Any:
                item_kinds = _json_types(item_type)["types"]
                if len(item_kinds) == 1:
                    described["items"] = item_kinds[0]
        elif isinstance(origin, type) and issubclass(origin, enum.Enum):
            kind = "string"
            described["choices"] = [m.value for m in origin]
        else:
            continue  # a Python object (e.g. accelerate's ParallelismConfig) that JSON cannot describe
        if kind not in described["types"]:
            described["types"].append(kind)
    # In one order whatever the annotation's: typing caches unions, so `str | list[str]` may come back as the
    # `list[str] | str` another module created first.
    described["types"].sort(key=JSON_TYPE_ORDER.index)
    return described


def json_default(field: dataclasses.Field[Any], call_factory: bool = False) -> Any:
    """The field's default as JSON (an enum member's value; a Python object's repr); a default factory's value
    when `call_factory`, else None."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif call_factory and field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return None
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
    object_keys = _object_keys()
    item_choices = _item_choices()
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(GRPOConfig):
        if not field.init or field.name.startswith("_"):
            continue
        description = _json_types(hints[field.name])
        description["types"] += [k for k in EXTRA_TYPES.get(field.name, []) if k not in description["types"]]
        description["default"] = json_default(field)
        if field.name in TRL_STRING_CHOICES:
            description["choices"] = TRL_STRING_CHOICES[field.name]
        if field.name in object_keys:
            description["keys"] = object_keys[field.name]
        if field.name in item_choices:
            description["item_choices"] = item_choices[field.name]
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


def main(argv: list[str]) -> int:
    """`python -m shared.spec.grpo_config --write` regenerates the description from the installed TRL."""
    rendered = render_description(describe_installed_grpo_config())
    if argv[1:] == ["--write"]:
        DESCRIPTION_PATH.write_text(rendered)
        print(f"wrote {DESCRIPTION_PATH}")
        return 0
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
