"""The reward functions a job spec names: built-ins with their parameters, Python sources, reward models.

Each built-in is its own model, so that OpenAPI documents its parameters. A reward's `reward_name` is the name TRL
logs it under (`rewards/<name>/mean`): a built-in's `label` or its kind, a Python reward's `name` or function, a
reward model's last part of its path (as TRL names it).
"""

from __future__ import annotations

import ast
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

LABEL = Field(
    default=None,
    min_length=1,
    max_length=100,
    pattern=r"^[A-Za-z0-9_.-]+$",
    description="The name its metrics are logged under (`rewards/<label>/mean`); needed to tell two built-ins of "
    "the same kind apart.",
)
SEED_FORMAT = r"<think>(.*?)</think>\s*<answer>(.*?)</answer>"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _compiled(pattern: str, groups: int = 0) -> str:
    """The pattern, if Python compiles it (with at least `groups` groups); else a ValueError saying why."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    if compiled.groups < groups:
        raise ValueError(f"needs {groups} groups (the reasoning, then the answer), has {compiled.groups}")
    return pattern


class _Builtin(_Strict):
    type: Literal["builtin"]
    label: str | None = LABEL

    @property
    def reward_name(self) -> str:
        name: str = getattr(self, "name")  # noqa: B009 (each subclass narrows `name` to a Literal)
        return self.label or name


class LengthParams(_Strict):
    ideal_length: int = Field(default=20, ge=0, description="Characters a completion should have.")


class LengthReward(_Builtin):
    """The seed's length reward: `-abs(ideal_length - len(completion))`, best (0) at exactly `ideal_length`."""

    name: Literal["length"]
    params: LengthParams = Field(default_factory=LengthParams)


class FormatParams(_Strict):
    pattern: str = Field(
        default=SEED_FORMAT,
        description="A regular expression with two groups, the reasoning and the answer (searched; dot matches "
        "newline).",
    )
    min_reasoning_chars: int = Field(default=20, ge=0, description="Reasoning longer than this earns full credit.")
    full_credit: float = Field(
        default=1.0, description="For the right format with reasoning longer than `min_reasoning_chars` and an answer."
    )
    partial_credit: float = Field(default=0.5, description="For the right format with thin reasoning or no answer.")

    @field_validator("pattern")
    @classmethod
    def _two_groups(cls, value: str) -> str:
        return _compiled(value, groups=2)


class FormatReward(_Builtin):
    """The seed's (DeepSeek R1's) format reward: `<think>...</think><answer>...</answer>` earns `full_credit` when
    the reasoning is longer than `min_reasoning_chars` and the answer is not empty, `partial_credit` for the bare
    format, 0.0 otherwise."""

    name: Literal["format"]
    params: FormatParams = Field(default_factory=FormatParams)


class RegexParams(_Strict):
    pattern: str = Field(min_length=1, description="A Python regular expression.")
    match_score: float = Field(default=1.0, description="The score of a completion the pattern matches.")
    miss_score: float = Field(default=0.0, description="The score of a completion the pattern does not match.")
    fullmatch: bool = Field(default=False, description="The whole completion must match, not just a part of it.")
    ignore_case: bool = Field(default=False, description="Match letters regardless of case.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _compiled(value)


class RegexReward(_Builtin):
    """`match_score` for a completion the pattern matches (searched, dot matches newline), else `miss_score`."""

    name: Literal["regex"]
    params: RegexParams


class AccuracyParams(_Strict):
    column: str = Field(default="answer", description="The dataset column with each prompt's correct answer.")


class AccuracyReward(_Builtin):
    """1.0 when the completion's answer equals the dataset's, checked with math-verify (LaTeX, fractions, sets,
    `\\boxed{}`, numbers in any form); where math-verify parses neither, plain string or number equality of the
    answer (the content of `<answer>...</answer>` when present). 0.0 otherwise."""

    name: Literal["accuracy"]
    params: AccuracyParams = Field(default_factory=AccuracyParams)


class ExactMatchParams(_Strict):
    column: str = Field(default="answer", description="The dataset column to compare with.")
    strip: bool = Field(default=True, description="Ignore surrounding whitespace.")
    ignore_case: bool = Field(default=False, description="Compare letters regardless of case.")


class ExactMatchReward(_Builtin):
    """1.0 when the completion equals the dataset column's value (after `strip` / `ignore_case`), else 0.0."""

    name: Literal["exact_match"]
    params: ExactMatchParams = Field(default_factory=ExactMatchParams)


class JsonValidParams(_Strict):
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="A JSON Schema the value must also satisfy."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _is_a_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as error:
                raise ValueError(f"not a valid JSON Schema: {error.message}") from None
        return value


class JsonValidReward(_Builtin):
    """1.0 when the completion is JSON (a ```json fenced block counts) and, if a `schema` is given, satisfies it;
    else 0.0."""

    name: Literal["json_valid"]
    params: JsonValidParams = Field(default_factory=JsonValidParams)


BuiltinReward = Annotated[
    LengthReward | FormatReward | RegexReward | AccuracyReward | ExactMatchReward | JsonValidReward,
    Field(discriminator="name"),
]
BUILTIN_NAMES = ("length", "format", "regex", "accuracy", "exact_match", "json_valid")


class PythonReward(_Strict):
    """A reward function in Python source, called exactly as TRL calls reward functions, in a sandbox.

    `def reward_len(completions, **kwargs): return [-abs(20 - len(c)) for c in completions]`
    """

    type: Literal["python"]
    source: str = Field(min_length=1, description="Python source defining the reward function (and any helpers).")
    function: str | None = Field(
        default=None, description="Which function of the source TRL calls; needed when the source defines several."
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The name its metrics are logged under (default: the function's name).",
    )
    on_error: Literal["fail", "zero"] = Field(
        default="fail",
        description="`fail`: a call that raises (or times out) fails the job. `zero`: its completions score 0.0 "
        "and are counted in `rewards/<name>/errors`. A list of the wrong length always fails the job.",
    )

    @property
    def function_name(self) -> str:
        """The function of the source TRL calls (the spec is checked to define exactly one, or to name it)."""
        if self.function:
            return self.function
        tree = ast.parse(self.source)
        return next(n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))

    @property
    def reward_name(self) -> str:
        return self.name or self.function_name


class ModelReward(_Strict):
    """A sequence-classification reward model (local path or hub id) that TRL loads and scores completions with.

    TRL logs it under the last part of its path (`rewards/<that>/mean`)."""

    type: Literal["model"]
    model: str = Field(
        min_length=1, description="A local path or hub id of a sequence-classification model with one label."
    )

    @property
    def reward_name(self) -> str:
        return self.model.rstrip("/").split("/")[-1]


def _reward_kind(value: Any) -> str | None:
    """Which member of RewardSpec a value is: `python`, `model`, or a built-in's name."""
    if isinstance(value, BaseModel):
        value = {"type": getattr(value, "type", None), "name": getattr(value, "name", None)}
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind == "builtin":
        name = value.get("name")
        return name if isinstance(name, str) else ""  # an empty tag: "name is required"
    return kind if isinstance(kind, str) else None


# One flat union (not a union of unions): OpenAPI can describe it, and a wrong built-in name is said as such.
RewardSpec = Annotated[
    Annotated[LengthReward, Tag("length")]
    | Annotated[FormatReward, Tag("format")]
    | Annotated[RegexReward, Tag("regex")]
    | Annotated[AccuracyReward, Tag("accuracy")]
    | Annotated[ExactMatchReward, Tag("exact_match")]
    | Annotated[JsonValidReward, Tag("json_valid")]
    | Annotated[PythonReward, Tag("python")]
    | Annotated[ModelReward, Tag("model")],
    Discriminator(_reward_kind),
]
