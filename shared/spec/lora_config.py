"""A description of PEFT's `LoraConfig` that the API validates `peft_config` against, without importing PEFT.

`lora_config_fields.json` holds every field: the JSON types it takes, its choices, its default and its help. It is
generated from the installed PEFT by `python -m shared.spec.lora_config --write`; a unit test regenerates it
and fails when it drifts from the installed PEFT (as `shared.spec.grpo_config` does for TRL's GRPOConfig).
"""

from __future__ import annotations

import sys
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.spec.json_fields import describe_fields, generate_description, read_fields, union_members

DESCRIPTION_PATH = Path(__file__).with_name("lora_config_fields.json")


def _literal_choices(annotation: Any) -> list[str]:
    """The strings a `Literal[...]` (alone or in a union) allows: `bias`, `init_lora_weights`."""
    return [
        value
        for member in union_members(annotation)
        if typing.get_origin(member) is typing.Literal
        for value in typing.get_args(member)
        if isinstance(value, str)
    ]


def _add_literal_choices(name: str, annotation: Any, description: dict[str, Any]) -> None:
    """LoraConfig types its string choices as `Literal[...]`, which `json_types` reads as a plain string."""
    if choices := _literal_choices(annotation):
        description["choices"] = choices


def describe_installed_lora_config() -> dict[str, Any]:
    """Describe the installed PEFT's LoraConfig (imports PEFT: for the generator and its test, never the API)."""
    import peft
    from peft import LoraConfig

    # Default factories are called, so that a default is the one PEFT gives (`{}` for rank_pattern, not null).
    fields = describe_fields(LoraConfig, call_factories=True, refine=_add_literal_choices)
    return {"peft_version": peft.__version__, "fields": fields}


@lru_cache(maxsize=1)
def lora_config_fields() -> dict[str, dict[str, Any]]:
    """Every LoraConfig field, as the committed description has it."""
    return read_fields(DESCRIPTION_PATH)


def main(argv: list[str]) -> int:
    """`python -m shared.spec.lora_config --write` regenerates the description from the installed PEFT."""
    return generate_description(argv, DESCRIPTION_PATH, describe_installed_lora_config)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
