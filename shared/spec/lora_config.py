"""A description of PEFT's `LoraConfig` that the API validates `peft_config` against, without importing PEFT.

`lora_config_fields.json` holds every field: the JSON types it takes, its choices, its default and its help. It is
generated from the installed PEFT by `python -m shared.spec.lora_config --write`; a unit test regenerates it
and fails when it drifts from the installed PEFT (as `shared.spec.grpo_config` does for TRL's GRPOConfig).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.spec.grpo_config import _json_types as json_types
from shared.spec.grpo_config import json_default, render_description

DESCRIPTION_PATH = Path(__file__).with_name("lora_config_fields.json")


def _literal_choices(annotation: Any) -> list[str]:
    """The strings a `Literal[...]` (alone or in a union) allows: `bias`, `init_lora_weights`."""
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    return [
        value
        for member in members
        if typing.get_origin(member) is typing.Literal
        for value in typing.get_args(member)
        if isinstance(value, str)
    ]


def describe_installed_lora_config() -> dict[str, Any]:
    """Describe the installed PEFT's LoraConfig (imports PEFT: for the generator and its test, never the API)."""
    import peft
    from peft import LoraConfig

    hints = typing.get_type_hints(LoraConfig)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(LoraConfig):
        if not field.init or field.name.startswith("_"):
            continue
        description = json_types(hints[field.name])
        if choices := _literal_choices(hints[field.name]):
            description["choices"] = choices
        description["default"] = json_default(field, call_factory=True)
        description["help"] = " ".join(str(field.metadata.get("help", "")).split())
        fields[field.name] = description
    return {"peft_version": peft.__version__, "fields": fields}


@lru_cache(maxsize=1)
def lora_config_fields() -> dict[str, dict[str, Any]]:
    """Every LoraConfig field, as the committed description has it."""
    fields: dict[str, dict[str, Any]] = json.loads(DESCRIPTION_PATH.read_text())["fields"]
    return fields


def main(argv: list[str]) -> int:
    """`python -m shared.spec.lora_config --write` regenerates the description from the installed PEFT."""
    rendered = render_description(describe_installed_lora_config())
    if argv[1:] == ["--write"]:
        DESCRIPTION_PATH.write_text(rendered)
        print(f"wrote {DESCRIPTION_PATH}")
        return 0
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
