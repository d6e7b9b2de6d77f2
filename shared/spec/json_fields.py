"""JSON-field typing and description rendering, for the config dataclasses a job spec carries as JSON.

A description (`shared.spec.grpo_config` for TRL's GRPOConfig, `shared.spec.lora_config` for PEFT's LoraConfig)
says, field by field, the JSON types a field accepts, its JSON default and its help; it is generated from the
installed library and committed as JSON. The checks (`shared.spec.grpo_args`, `shared.spec.peft`) hold a spec's
values against it and name the expected type in their messages. This module holds what both sides share; it
imports neither TRL nor PEFT, so the API can use it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The order of a description's `types`, whatever the annotation's.
JSON_TYPE_ORDER = ["boolean", "integer", "number", "string", "array", "object", "null"]

# The JSON type of each Python type a JSON value (or a field annotation) can have. `bool` comes first: a bool is
# also an int, and the first match wins.
PYTHON_JSON_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    dict: "object",
    list: "array",
}

# How an error message names each JSON type ("must be an integer or null").
TYPE_PHRASES: dict[str, str] = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "string": "a string",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


# --- Typing a value -------------------------------------------------------------------------------------------


def json_type_of(value: Any) -> str:
    """The JSON type of a value parsed from JSON ("integer", "null", ...); a Python type's name for anything else."""
    if value is None:
        return "null"
    for python_type, json_type in PYTHON_JSON_TYPES.items():
        if isinstance(value, python_type):
            return json_type
    return type(value).__name__


def accepts(kinds: list[str], value_type: str) -> bool:
    """Whether a field that takes the JSON types `kinds` takes a value of JSON type `value_type`."""
    # JSON has one number type: an integer is a fine value for a float field.
    return value_type in kinds or (value_type == "integer" and "number" in kinds)


def type_phrase(kinds: list[str]) -> str:
    """The JSON types `kinds` as an error message says them: "an integer or null"."""
    return " or ".join(TYPE_PHRASES[k] for k in kinds)


# --- Describing a field ---------------------------------------------------------------------------------------


def union_members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (`int | None`, `Optional[str]`); a lone annotation for any other."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def json_types(annotation: Any) -> dict[str, Any]:
    """`types` (JSON types a field accepts), `choices` (of an enum), `items` and `item_choices` (of a list)."""
    described: dict[str, Any] = {"types": []}
    for member in union_members(annotation):
        origin = typing.get_origin(member) or member
        if member is type(None):
            kind = "null"
        elif origin is typing.Literal:
            kind = "boolean" if all(isinstance(v, bool) for v in typing.get_args(member)) else "string"
        elif origin is list:
            kind = "array"
            (item_type,) = typing.get_args(member) or (Any,)
            if isinstance(item_type, type) and issubclass(item_type, enum.Enum):
                described["items"] = "string"
                described["item_choices"] = [m.value for m in item_type]
            elif item_type is not Any:
                item_kinds = json_types(item_type)["types"]
                if len(item_kinds) == 1:
                    described["items"] = item_kinds[0]
        elif isinstance(origin, type) and origin in PYTHON_JSON_TYPES:
            kind = PYTHON_JSON_TYPES[origin]
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


def describe_fields(
    config_class: type[Any],
    *,
    call_factories: bool = False,
    refine: Callable[[str, Any, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Describe every field a user may pass to the config dataclass (its init fields, but not the `_private`
    ones): its JSON types and choices (`json_types`), its default (`json_default`, calling default factories when
    `call_factories`) and its help on one line. `refine(name, annotation, description)` adds, in place, what the
    annotation cannot say (choices that only a help text lists, the keys of an object)."""
    hints = typing.get_type_hints(config_class)
    fields: dict[str, dict[str, Any]] = {}
    for field in dataclasses.fields(config_class):
        if not field.init or field.name.startswith("_"):
            continue
        description = json_types(hints[field.name])
        if refine is not None:
            refine(field.name, hints[field.name], description)
        description["default"] = json_default(field, call_factory=call_factories)
        description["help"] = " ".join(str(field.metadata.get("help", "")).split())
        fields[field.name] = description
    return fields


# --- The committed file ---------------------------------------------------------------------------------------


def render_description(description: dict[str, Any]) -> str:
    """The description as the committed file holds it."""
    return json.dumps(description, indent=1, sort_keys=True) + "\n"


def read_fields(path: Path) -> dict[str, dict[str, Any]]:
    """Every field of the committed description at `path`."""
    fields: dict[str, dict[str, Any]] = json.loads(path.read_text())["fields"]
    return fields


def generate_description(argv: list[str], path: Path, describe: Callable[[], dict[str, Any]]) -> int:
    """A description module's command line: `--write` regenerates the file at `path` from `describe()` (which
    imports the installed library); without it the description goes to stdout, for a look before writing."""
    rendered = render_description(describe())
    if argv[1:] == ["--write"]:
        path.write_text(rendered)
        print(f"wrote {path}")
        return 0
    sys.stdout.write(rendered)
    return 0
