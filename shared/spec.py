"""The job spec: what a user POSTs to /v1/jobs, and every check it must pass before anything is stored.

The shape mirrors `GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, peft_config)` so a TRL user
recognises it. `JobSpec` checks the structure (pydantic); `check_spec` checks the meaning: `args` against
GRPOConfig (see `shared.grpo_args`), Python reward sources (they must parse and define the callable TRL will call),
and that the reward functions find the dataset columns they ask for.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from shared.grpo_args import check_args
from shared.problems import Problem, SpecError, did_you_mean
from shared.reward_source import TRL_REWARD_KWARGS, read_reward_source

# How many rows with the same problem are named before the rest are counted.
MAX_ROWS_NAMED = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Datasets -------------------------------------------------------------------------------------------------


class InlineDataset(_Strict):
    """Prompt rows given in the spec itself: each needs a `prompt`; other columns reach the reward functions."""

    rows: list[dict[str, Any]] = Field(min_length=1, description='Rows like {"prompt": "...", "answer": "..."}.')


class PathDataset(_Strict):
    """A dataset the worker loads: a local file (.jsonl/.json/.csv/.parquet), a `save_to_disk` folder, or a hub name."""

    path: str = Field(min_length=1, description="Path on the worker's filesystem, or a dataset name on the Hub.")
    split: str = Field(default="train", description="Split to load.")
    name: str | None = Field(default=None, description="Dataset configuration name (hub datasets).")


def _dataset_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    source = value
    if "rows" in source:
        return "inline"
    if "path" in source:
        return "path"
    return None


DatasetSpec = Annotated[
    Annotated[InlineDataset, Tag("inline")] | Annotated[PathDataset, Tag("path")],
    Discriminator(
        _dataset_kind,
        custom_error_type="dataset_kind",
        custom_error_message="a dataset needs `rows` (a list of prompt rows) or `path` (a file, folder or hub name)",
    ),
]


# --- Reward functions -----------------------------------------------------------------------------------------


class LengthParams(_Strict):
    ideal_length: int = Field(default=20, ge=0, description="Characters a completion should have.")


class LengthReward(_Strict):
    """The seed's length reward: `-abs(ideal_length - len(completion))` for each completion."""

    type: Literal["builtin"]
    name: Literal["length"]
    params: LengthParams = Field(default_factory=LengthParams)

    @property
    def reward_name(self) -> str:
        return self.name


BuiltinReward = LengthReward


class PythonReward(_Strict):
    """A reward function in Python source, called exactly as TRL calls reward functions.

    `def reward_len(completions, **kwargs): return [-abs(20 - len(c)) for c in completions]`
    """

    type: Literal["python"]
    source: str = Field(min_length=1, description="Python source defining the reward function (and any helpers).")
    function: str | None = Field(
        default=None, description="Which function of the source TRL calls; needed when the source defines several."
    )

    @property
    def reward_name(self) -> str:
        return self.function or _top_level_functions(self.source)[0]


class ModelReward(_Strict):
    """A sequence-classification reward model (local path or hub id) that TRL loads and scores completions with."""

    type: Literal["model"]
    model: str = Field(min_length=1)

    @property
    def reward_name(self) -> str:
        return self.model.rstrip("/").split("/")[-1]


RewardSpec = Annotated[BuiltinReward | PythonReward | ModelReward, Field(discriminator="type")]


# --- The spec -------------------------------------------------------------------------------------------------


class JobSpec(_Strict):
    """A GRPO training job: `GRPOTrainer`'s own arguments, as JSON."""

    name: str | None = Field(default=None, max_length=200, description="A label for people; not unique.")
    model: str = Field(min_length=1, description="Local path or hub id of the causal LM to train.")
    train_dataset: DatasetSpec
    eval_dataset: DatasetSpec | None = None
    reward_funcs: list[RewardSpec] = Field(min_length=1)
    args: dict[str, Any] = Field(
        default_factory=dict, description="GRPOConfig arguments, spelled as TRL spells them (output_dir excepted)."
    )
    peft_config: dict[str, Any] | None = Field(default=None, description="Not supported yet: must be null.")


# --- Meaning checks -------------------------------------------------------------------------------------------


def _top_level_functions(source: str) -> list[str]:
    tree = ast.parse(source)
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    kinds: dict[type, str] = {str: "string", list: "list", dict: "object"}
    return kinds.get(type(value), type(value).__name__)


def _check_rows(rows: list[dict[str, Any]], path: str) -> list[Problem]:
    """Every row has a prompt, the same columns, and one JSON type per column (as Arrow needs to load them)."""
    problems: list[Problem] = []
    columns = set(rows[0])
    bad_prompt = [i for i, row in enumerate(rows) if not _is_prompt(row.get("prompt"))]
    if bad_prompt:
        named = ", ".join(f"rows[{i}]" for i in bad_prompt[:MAX_ROWS_NAMED])
        more = f" and {len(bad_prompt) - MAX_ROWS_NAMED} more" if len(bad_prompt) > MAX_ROWS_NAMED else ""
        verb = "needs" if len(bad_prompt) == 1 else "need"
        other = sorted(set(rows[bad_prompt[0]]) - {"prompt"})
        hint = f" (its columns: {', '.join(other)}; rename the one that holds the prompt)" if other else ""
        problems.append(
            Problem(
                f"{path}.rows[{bad_prompt[0]}].prompt",
                f"{path}: {named}{more} {verb} a non-empty 'prompt': a string, or a list of chat messages "
                f'[{{"role": "user", "content": "..."}}]{hint}',
            )
        )
    uneven = [i for i, row in enumerate(rows) if set(row) != columns]
    if uneven:
        problems.append(
            Problem(
                f"{path}.rows[{uneven[0]}]",
                f"{path}.rows[{uneven[0]}] has columns {sorted(rows[uneven[0]])}, but rows[0] has {sorted(columns)}: "
                "every row needs the same columns",
            )
        )
    for column in sorted(columns):
        kinds: dict[str, int] = {}
        for index, row in enumerate(rows):
            if row.get(column) is not None:
                kinds.setdefault(_json_kind(row[column]), index)
        if len(kinds) > 1:
            (first, _), (second, index) = sorted(kinds.items(), key=lambda item: item[1])[:2]
            problems.append(
                Problem(
                    f"{path}.rows[{index}].{column}",
                    f"{path}.rows[{index}].{column} is a {second} where earlier rows have a {first}: "
                    "a column holds one type in every row",
                )
            )
    reserved = sorted(columns & TRL_REWARD_KWARGS)
    if reserved:
        problems.append(
            Problem(
                f"{path}.rows[0].{reserved[0]}",
                f"{path} has column(s) {', '.join(reserved)}, which TRL already passes to reward functions under "
                "that name: rename the column(s)",
            )
        )
    return problems


def _unstorable_values(value: Any, path: str) -> list[Problem]:
    """NaN/infinite numbers and NUL characters: JSON cannot carry the first, Postgres refuses the second."""
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(path, f"{path} is {value}, which is not a number JSON can carry: give a finite number")]
    if isinstance(value, str) and "\x00" in value:
        return [Problem(path, f"{path} contains a NUL character (\\u0000): remove it")]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _unstorable_values(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _unstorable_values(item, f"{path}[{index}]")]
    return []


def _dataset_columns(dataset: DatasetSpec | None) -> set[str] | None:
    """The columns of inline rows; None when the dataset is only read by the worker."""
    return set(dataset.rows[0]) if isinstance(dataset, InlineDataset) else None


def _check_reward_funcs(spec: JobSpec) -> list[Problem]:
    problems: list[Problem] = []
    datasets = {
        "train_dataset": _dataset_columns(spec.train_dataset),
        "eval_dataset": _dataset_columns(spec.eval_dataset),
    }
    names: dict[str, int] = {}
    for index, reward in enumerate(spec.reward_funcs):
        path = f"reward_funcs[{index}]"
        if isinstance(reward, PythonReward):
            source = read_reward_source(reward.source, reward.function, path)
            problems += source.problems
            if source.problems or source.function is None:
                continue
            name = source.function
            for dataset, columns in datasets.items():
                missing = [c for c in source.required_columns if columns is not None and c not in columns]
                if missing:
                    problems.append(
                        Problem(
                            f"{path}.source",
                            f"{name}() needs the dataset column(s) {', '.join(missing)}, but {dataset} has "
                            f"{', '.join(sorted(columns or []))}: add the column, or give the parameter a default",
                        )
                    )
        else:
            name = reward.reward_name
        if name in names:
            problems.append(
                Problem(
                    path,
                    f"{path} and reward_funcs[{names[name]}] are both named {name!r}, so their metrics "
                    f"(rewards/{name}/mean) would collide: rename one function",
                )
            )
        names.setdefault(name, index)
    return problems


def check_spec(spec: JobSpec, *, device: str = "auto") -> list[Problem]:
    """Every problem with a structurally valid spec that would make TRL fail or misbehave at run time."""
    unstorable = _unstorable_values(spec.model_dump(mode="python"), "")
    if unstorable:
        return unstorable  # the other checks assume numbers are numbers
    problems = check_args(
        spec.args, reward_count=len(spec.reward_funcs), has_eval_dataset=spec.eval_dataset is not None, device=device
    )
    for field_name in ("train_dataset", "eval_dataset"):
        dataset = getattr(spec, field_name)
        if isinstance(dataset, InlineDataset):
            problems += _check_rows(dataset.rows, field_name)
    problems += _check_reward_funcs(spec)
    if spec.peft_config is not None:
        problems.append(
            Problem("peft_config", "peft_config (LoRA) is not supported by this service yet: set it to null")
        )
    return problems


def problems_from_errors(items: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Pydantic's structural errors (as `ValidationError.errors()` lists them), said as Problems with dotted paths."""
    problems = []
    for item in items:
        location = list(item["loc"])
        problems.append(Problem(_dotted(location), _structural_message(location, item)))
    return problems


# Tags pydantic puts in an error's location when it picks a member of a discriminated union: not field names.
_UNION_TAGS = {"inline", "path", "builtin", "python", "model"}


def _dotted(location: list[str | int]) -> str:
    path = ""
    previous: str | int | None = None
    for part in location:
        if part in _UNION_TAGS and (isinstance(previous, int) or previous in ("train_dataset", "eval_dataset")):
            previous = None  # the union's tag, not a field
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        previous = part
    return path


def _structural_message(location: list[str | int], item: Any) -> str:
    field = _dotted(location) or "the body"
    kind = item["type"]
    context = item.get("ctx") or {}
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        hint = did_you_mean(str(location[-1]), JobSpec.model_fields) if len(location) == 1 else ""
        return f"{field} is not a field here{hint}: remove it"
    if kind == "literal_error":
        given = str(item.get("input"))
        choices = [c.strip(" '") for c in str(context.get("expected", "")).replace(" or ", ",").split(",")]
        return f"{field} is {given!r}{did_you_mean(given, choices)}: use {context.get('expected')}"
    if kind == "union_tag_invalid":
        return f"{field}.type is {context.get('tag')!r}: use one of {context.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{field}.type is required: one of 'builtin', 'python', 'model'"
    return f"{field}: {item['msg']}"


def parse_spec(payload: Any, *, device: str = "auto") -> JobSpec:
    """Validate a spec from JSON (structure, then meaning); raises SpecError naming every problem."""
    try:
        spec = JobSpec.model_validate(payload)
    except ValidationError as error:
        raise SpecError(problems_from_errors(error.errors())) from None
    problems = check_spec(spec, device=device)
    if problems:
        raise SpecError(problems)
    return spec
