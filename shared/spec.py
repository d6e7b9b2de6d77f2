"""The job spec: what a user POSTs to /v1/jobs, and every check it must pass before anything is stored.

The shape mirrors `GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, peft_config)` so a TRL user
recognises it. `JobSpec` checks the structure (pydantic); `check_spec` checks the meaning: `args` against
GRPOConfig (see `shared.grpo_args`), Python reward sources (they must parse and define the callable TRL will call),
and that the reward functions find the dataset columns they ask for.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from shared.grpo_args import check_args
from shared.problems import Problem, SpecError, did_you_mean

# Keyword arguments TRL passes to every reward function besides the dataset columns (GRPOTrainer._calculate_rewards).
TRL_REWARD_KWARGS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
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
    source = value if isinstance(value, dict) else vars(value)
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


def _undefined_names(source: str, filename: str) -> dict[str, list[str]]:
    """Names each scope reads that nothing defines (not the module, not builtins): {scope name: [names]}."""
    module = symtable.symtable(source, filename, "exec")
    defined = {s.get_name() for s in module.get_symbols() if s.is_assigned() or s.is_imported()}
    if any(s.get_name() == "*" for s in module.get_symbols()):
        return {}  # `from x import *` defines names we cannot see
    known = defined | set(dir(builtins))
    missing: dict[str, list[str]] = {}

    def visit(table: symtable.SymbolTable, scope: str) -> None:
        for symbol in table.get_symbols():
            name = symbol.get_name()
            reads_global = symbol.is_global() if table.get_type() != "module" else not symbol.is_assigned()
            if symbol.is_referenced() and reads_global and name not in known:
                missing.setdefault(scope, []).append(name)
        for child in table.get_children():
            visit(child, scope if table.get_type() != "module" else child.get_name())

    visit(module, "<module>")
    return missing


def _reward_parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[str], bool]:
    """The parameters a reward function requires (no default), and whether it takes **kwargs."""
    positional = node.args.posonlyargs + node.args.args
    required = [a.arg for a in positional[: len(positional) - len(node.args.defaults)]]
    required += [a.arg for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is None]
    return required, node.args.kwarg is not None


def check_python_reward(reward: PythonReward, path: str) -> tuple[list[str], list[Problem]]:
    """Parse a Python reward; returns the dataset columns it requires, and its problems."""
    filename = f"<{path}>"
    try:
        tree = ast.parse(reward.source, filename=filename)
    except SyntaxError as error:
        return [], [Problem(f"{path}.source", f"{path}.source is not valid Python: line {error.lineno}: {error.msg}")]
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if not functions:
        return [], [
            Problem(
                f"{path}.source",
                f"{path}.source defines no function: define `def my_reward(completions, **kwargs)` returning one "
                "float per completion",
            )
        ]
    if reward.function is None and len(functions) > 1:
        return [], [
            Problem(
                f"{path}.function",
                f"{path}.source defines {len(functions)} functions ({', '.join(functions)}): set {path}.function to "
                "the one TRL should call",
            )
        ]
    name = reward.function or next(iter(functions))
    if name not in functions:
        return [], [
            Problem(
                f"{path}.function",
                f"{path}.function is {name!r}, which the source does not define{did_you_mean(name, functions)}",
            )
        ]
    problems: list[Problem] = []
    required, takes_kwargs = _reward_parameters(functions[name])
    if not takes_kwargs:
        problems.append(
            Problem(
                f"{path}.source",
                f"{name}() must accept **kwargs: TRL calls reward functions with prompts, completions, "
                "completion_ids, trainer_state and every dataset column as keyword arguments",
            )
        )
    for scope, names in _undefined_names(reward.source, filename).items():
        where = "the source" if scope == "<module>" else f"{scope}()"
        problems.append(
            Problem(
                f"{path}.source",
                f"{where} uses {', '.join(sorted(set(names)))}, which the source neither defines nor imports",
            )
        )
    columns = [p for p in required if p not in TRL_REWARD_KWARGS]
    return columns, problems


def _check_rows(rows: list[dict[str, Any]], path: str) -> list[Problem]:
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
    return problems


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)
    )


def check_spec(spec: JobSpec, *, device: str = "auto") -> list[Problem]:
    """Every problem with a structurally valid spec that would make TRL fail or misbehave at run time."""
    problems = check_args(
        spec.args, reward_count=len(spec.reward_funcs), has_eval_dataset=spec.eval_dataset is not None, device=device
    )
    for field_name in ("train_dataset", "eval_dataset"):
        dataset = getattr(spec, field_name)
        if isinstance(dataset, InlineDataset):
            problems += _check_rows(dataset.rows, field_name)

    columns = set(spec.train_dataset.rows[0]) if isinstance(spec.train_dataset, InlineDataset) else None
    names: dict[str, int] = {}
    for index, reward in enumerate(spec.reward_funcs):
        path = f"reward_funcs[{index}]"
        if isinstance(reward, PythonReward):
            required, reward_problems = check_python_reward(reward, path)
            problems += reward_problems
            if reward_problems:
                continue
            missing = [c for c in required if columns is not None and c not in columns]
            if missing:
                problems.append(
                    Problem(
                        f"{path}.source",
                        f"{reward.reward_name}() needs the dataset column(s) {', '.join(missing)}, but train_dataset "
                        f"has {', '.join(sorted(columns or []))}: add the column, or give the parameter a default",
                    )
                )
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
