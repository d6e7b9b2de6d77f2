"""The job spec: what a user POSTs to /v1/jobs, and every check it must pass before anything is stored.

The shape mirrors `GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, peft_config)` so a TRL user
recognises it. `JobSpec` checks the structure (pydantic); `check_spec` checks the meaning: `args` against
GRPOConfig (see `shared.spec.grpo_args`), `peft_config` against PEFT's LoraConfig (see `shared.spec.peft`), Python
reward sources (they must parse and define the callable TRL will call), that the reward functions find the dataset
columns they ask for, and the operator's policy (remote code, credentials, the Hub, local paths: see
`shared.spec.policy`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.access.secrets import SpecSecrets, check_spec_secrets
from shared.spec.datasets import DatasetSpec, FileDataset, InlineDataset, renamed
from shared.spec.grpo_args import check_args
from shared.spec.peft import check_peft_config
from shared.spec.policy import SpecPolicy, check_policy
from shared.spec.problems import Problem, SpecError, did_you_mean
from shared.spec.resources import Resources, check_resources
from shared.spec.reward_source import TRL_REWARD_KWARGS, read_reward_source
from shared.spec.rewards import BUILTIN_NAMES, PythonReward, RewardSpec
from shared.spec.tools import PythonEnvironment, ToolSpec, check_agents

# How many rows with the same problem are named before the rest are counted.
MAX_ROWS_NAMED = 3
# Where no operator's policy is given: no remote code, no credentials, the Hub on, local paths anywhere.
DEFAULT_POLICY = SpecPolicy()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- The spec -------------------------------------------------------------------------------------------------


# Labels as the hosted fine-tuning APIs take them: a few short strings; keys are what `?metadata=key=value` filters.
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$")]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
EnvironmentName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class JobSpec(_Strict):
    """A GRPO training job: `GRPOTrainer`'s own arguments, as JSON."""

    name: str | None = Field(default=None, max_length=200, description="A label for people; not unique.")
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None,
        max_length=16,
        description="Up to 16 labels (keys: letters, digits and `_.:/-`, up to 64; values up to 512 characters) "
        "that the job list filters by: `GET /v1/jobs?metadata=team=research`.",
    )
    model: str = Field(min_length=1, description="Local path or hub id of the causal LM to train.")
    train_dataset: DatasetSpec | None = Field(
        default=None,
        description="The prompts to train on (rows, an uploaded file_id, a path or a hub dataset). May be left out "
        "only when an environment_factory owns the data: its reset() then gives each prompt, and args.max_steps the "
        "length.",
    )
    eval_dataset: DatasetSpec | None = None
    reward_funcs: list[RewardSpec] = Field(
        default_factory=list,
        description="The reward functions (built-ins, Python in the sandbox, reward models). May be empty only when "
        "the environment_factory scores rollouts itself (get_reward).",
    )
    tools: list[ToolSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Tools the model may call while it generates (TRL's `tools`): Python functions with type hints "
        "and a docstring, or built-ins (calculator, python_eval, regex_match, json_validate). They run in the job's "
        "sandbox; args.max_tool_calling_iterations bounds the calls per completion.",
    )
    environment_factory: PythonEnvironment | dict[EnvironmentName, PythonEnvironment] | None = Field(
        default=None,
        description="An environment class (TRL's `environment_factory`) instantiated in the sandbox per rollout: "
        "reset(**row) may return text appended to the prompt, its public methods are tools, get_reward() may score "
        "the rollout. A dict of them by name: the dataset's `environment` column picks one per row.",
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="GRPOConfig arguments, spelled as TRL spells them (output_dir excepted)."
    )
    peft_config: dict[str, Any] | None = Field(
        default=None,
        description="PEFT's LoraConfig arguments, spelled as PEFT spells them (`r`, `lora_alpha`, `target_modules`, "
        "...): the job trains a LoRA adapter on `model`, and its checkpoints and final model are adapters. null: the "
        "whole model is trained.",
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="What the job needs from its worker: GPUs for training and for a vLLM server, processes, a "
        "distributed preset. The default fits one GPU (or the CPU of a CPU worker).",
    )
    secrets: SpecSecrets


# --- Meaning checks -------------------------------------------------------------------------------------------


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


def _dataset_columns(dataset: DatasetSpec | None, file_columns: Mapping[str, list[str]] | None) -> set[str] | None:
    """The columns a dataset will have after its column_map; None where only the worker can tell."""
    if isinstance(dataset, InlineDataset):
        return set(renamed(dataset.rows[0], dataset.column_map))
    if isinstance(dataset, FileDataset) and file_columns is not None and dataset.file_id in file_columns:
        return {(dataset.column_map or {}).get(c, c) for c in file_columns[dataset.file_id]}
    return None


def _required_columns(reward: Any, path: str) -> tuple[str | None, list[str], list[Problem]]:
    """The name a reward logs under, the dataset columns it needs, and the problems of its source."""
    if isinstance(reward, PythonReward):
        source = read_reward_source(reward.source, reward.function, path)
        if source.problems or source.function is None:
            return None, [], source.problems
        return reward.name or source.function, source.required_columns, []
    column = getattr(getattr(reward, "params", None), "column", None)
    return reward.reward_name, [column] if column else [], []


def check_reward_sources(rewards: list[Any]) -> list[Problem]:
    """Problems of the reward functions themselves: Python sources that do not parse or define no function, and
    two rewards logged under one name."""
    problems: list[Problem] = []
    names: dict[str, int] = {}
    for index, reward in enumerate(rewards):
        path = f"reward_funcs[{index}]"
        name, _, reward_problems = _required_columns(reward, path)
        problems += reward_problems
        if name is None:
            continue
        if name in names:
            problems.append(
                Problem(
                    path,
                    f"{path} and reward_funcs[{names[name]}] are both named {name!r}, so their metrics "
                    f"(rewards/{name}/mean) would collide: give one a `label` (built-in) or `name` (Python)",
                )
            )
        names.setdefault(name, index)
    return problems


def _check_reward_columns(spec: JobSpec, file_columns: Mapping[str, list[str]] | None) -> list[Problem]:
    """Each reward finds the dataset columns it reads, in both datasets."""
    problems: list[Problem] = []
    datasets = {
        "train_dataset": _dataset_columns(spec.train_dataset, file_columns),
        "eval_dataset": _dataset_columns(spec.eval_dataset, file_columns),
    }
    for index, reward in enumerate(spec.reward_funcs):
        path = f"reward_funcs[{index}]"
        name, required, _ = _required_columns(reward, path)
        for dataset, columns in datasets.items():
            missing = [c for c in required if columns is not None and c not in columns]
            if name is not None and missing:
                field = f"{path}.source" if isinstance(reward, PythonReward) else f"{path}.params.column"
                problems.append(
                    Problem(
                        field,
                        f"{name} needs the dataset column(s) {', '.join(missing)}, but {dataset} has "
                        f"{', '.join(sorted(columns or []))}: add the column (or a column_map), or change the reward",
                    )
                )
    return problems


def file_ids(spec: JobSpec) -> list[str]:
    """The uploaded files a spec trains or evaluates on."""
    datasets = (spec.train_dataset, spec.eval_dataset)
    return sorted({d.file_id for d in datasets if isinstance(d, FileDataset)})


def check_files(spec: JobSpec, file_columns: Mapping[str, list[str]] | None) -> list[Problem]:
    """A problem for each uploaded file the spec names that does not exist (None: nothing known, no problems)."""
    if file_columns is None:
        return []
    return [
        Problem(
            f"{field}.file_id",
            f"{field}.file_id {dataset.file_id!r} is not an uploaded file: upload it with POST /v1/files "
            "(GET /v1/files lists them)",
        )
        for field in ("train_dataset", "eval_dataset")
        if isinstance(dataset := getattr(spec, field), FileDataset) and dataset.file_id not in file_columns
    ]


def check_spec(
    spec: JobSpec,
    *,
    device: str = "auto",
    file_columns: Mapping[str, list[str]] | None = None,
    vllm_server_url: str | None = None,
    policy: SpecPolicy = DEFAULT_POLICY,
) -> list[Problem]:
    """Every problem with a structurally valid spec that would make TRL fail or misbehave at run time, and every
    way it goes beyond the operator's `policy`.

    `file_columns` holds the columns of the uploaded files the spec may name (by file id); without it, file
    datasets are left to the worker. `vllm_server_url` is the operator's vLLM server, when there is one.
    """
    unstorable = _unstorable_values(spec.model_dump(mode="python"), "")
    if unstorable:
        return unstorable  # the other checks assume numbers are numbers
    problems = check_args(
        spec.args, reward_count=len(spec.reward_funcs), has_eval_dataset=spec.eval_dataset is not None, device=device
    )
    problems += check_resources(spec.resources, spec.args, device=device, vllm_server_url=vllm_server_url)
    problems += check_files(spec, file_columns)
    for field_name in ("train_dataset", "eval_dataset"):
        dataset = getattr(spec, field_name)
        if isinstance(dataset, InlineDataset):
            problems += _check_rows([renamed(row, dataset.column_map) for row in dataset.rows], field_name)
    problems += check_reward_sources(spec.reward_funcs) + _check_reward_columns(spec, file_columns)
    if spec.peft_config is not None:
        problems += check_peft_config(spec.peft_config, spec.args)
    problems += check_agents(spec)
    return problems + check_spec_secrets(spec.secrets) + check_policy(spec, policy)


def problems_from_errors(items: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Pydantic's structural errors (as `ValidationError.errors()` lists them), said as Problems with dotted paths."""
    problems = []
    for item in items:
        location = list(item["loc"])
        if item["type"] == "union_tag_invalid" and _is_builtin(item.get("input")):
            location.append("name")  # the built-in's name picks the member, not its type
        if len(location) > 1 and location[-1] == "[key]":  # (a top-level field may be named "[key]" too)
            location.pop()  # pydantic's marker for a dict key: the field is the key itself
            problems.append(Problem(_dotted(location), _key_message(location, item)))
            continue
        problems.append(Problem(_dotted(location), _structural_message(location, item)))
    return problems


def _is_builtin(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "builtin"


REWARD_TYPES = ("builtin", "python", "model")
# Tags pydantic puts in an error's location when it picks a member of a discriminated union: not field names.
_UNION_TAGS = {"inline", "file", "path", "hub", "builtin", "python", "model", *BUILTIN_NAMES}


def _dotted(location: list[str | int]) -> str:
    path = ""
    previous: str | int | None = None
    for part in location:
        after_union = isinstance(previous, int) or previous in ("train_dataset", "eval_dataset", "builtin")
        if part in _UNION_TAGS and after_union:
            previous = part  # the union's tag (builtin, then its kind), not a field
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        previous = part
    return path


def _key_message(location: list[str | int], item: Any) -> str:
    if location[0] == "metadata":
        return f"metadata key {location[-1]!r} may hold only letters, digits and _.:/- (1 to 64 characters): rename it"
    return f"{_dotted(location)}: the key is not valid: {item['msg']}"


def _metadata_message(location: list[str | int], item: Any) -> str | None:
    kind = item["type"]
    if len(location) == 1 and kind == "too_long":
        given = item.get("input")
        count = f"{len(given)} labels" if isinstance(given, dict) else "too many labels"
        return f"metadata has {count}: keep at most 16"
    if len(location) == 2 and kind == "string_too_long":
        return f"metadata.{location[1]} is longer than 512 characters: shorten it"
    if len(location) == 2 and kind == "string_type":
        return f"metadata.{location[1]} is {item.get('input')!r}: labels are strings, so quote it"
    return None


def _structural_message(location: list[str | int], item: Any) -> str:
    field = _dotted(location) or "the body"
    kind = item["type"]
    context = item.get("ctx") or {}
    if location and location[0] == "metadata" and (message := _metadata_message(location, item)):
        return message
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        hint = did_you_mean(str(location[-1]), JobSpec.model_fields) if len(location) == 1 else ""
        return f"{field} is not a field here{hint}: remove it"
    if kind == "literal_error":
        given = str(item.get("input"))
        choices = [c.strip(" '") for c in str(context.get("expected", "")).replace(" or ", ",").split(",")]
        return f"{field} is {given!r}{did_you_mean(given, choices)}: use {context.get('expected')}"
    if kind == "union_tag_invalid" and location[-1] == "name" and _is_builtin(item.get("input")):
        given = str(context.get("tag"))
        names = ", ".join(repr(n) for n in BUILTIN_NAMES)
        said = f"is {given!r}{did_you_mean(given, BUILTIN_NAMES)}" if given else "is required"
        return f"{field} {said}: the built-in rewards are {names}"
    if kind in ("union_tag_invalid", "union_tag_not_found") and str(location[0]) == "reward_funcs":
        given = f"is {context['tag']!r}" if "tag" in context else "is required"
        return (
            f"{field}.type {given}{did_you_mean(str(context.get('tag', '')), REWARD_TYPES)}: use one of "
            + ", ".join(repr(t) for t in REWARD_TYPES)
        )
    if kind == "union_tag_invalid":
        return f"{field}.type is {context.get('tag')!r}: use one of {context.get('expected_tags')}"
    if kind == "value_error":
        return f"{field}: {item['msg'].removeprefix('Value error, ')}"
    return f"{field}: {item['msg']}"


def parse_spec(
    payload: Any,
    *,
    device: str = "auto",
    file_columns: Mapping[str, list[str]] | None = None,
    policy: SpecPolicy = DEFAULT_POLICY,
) -> JobSpec:
    """Validate a spec from JSON (structure, then meaning); raises SpecError naming every problem."""
    try:
        spec = JobSpec.model_validate(payload)
    except ValidationError as error:
        raise SpecError(problems_from_errors(error.errors())) from None
    problems = check_spec(spec, device=device, file_columns=file_columns, policy=policy)
    if problems:
        raise SpecError(problems)
    return spec
