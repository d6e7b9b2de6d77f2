"""Tools and environments of an agent job (TRL's `GRPOTrainer(tools=..., environment_factory=...)`): what the spec
says, and what submit checks of them and of what they change in the rest of the spec (a dataset may be left out,
the rewards may be empty, where an environment takes their place).

The users' code runs only in the job's sandbox; the trainer holds stand-ins built from what
shared/spec/tool_source.py reads in the sources without running them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.spec.problems import Problem
from shared.spec.tool_source import read_environment, read_tools

# The built-in tools (their sources live in sandbox/builtin_tools.py): name -> what it does.
BUILTIN_TOOLS = {
    "calculator": "arithmetic on numbers: + - * / // % ** and parentheses",
    "python_eval": "the value of one Python expression (no names but a few safe built-ins)",
    "regex_match": "whether a regular expression matches a text, and the groups it found",
    "json_validate": "whether a text is valid JSON (and, given one, matches a JSON schema's required keys and types)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class PythonTool(_Strict):
    """Tools in Python source, run in the job's sandbox: each a function with type hints and a docstring whose
    `Args:` section describes every parameter (TRL builds the schema the model sees from them)."""

    type: Literal["python"]
    source: str = Field(min_length=1, description="Python source defining the tool function(s) and any helpers.")
    function: str | list[str] | None = Field(
        default=None,
        description="The function(s) of the source that are tools (default: every public top-level function).",
    )


class BuiltinTool(_Strict):
    """A tool the service ships: `calculator`, `python_eval`, `regex_match`, `json_validate`."""

    type: Literal["builtin"]
    name: Literal["calculator", "python_eval", "regex_match", "json_validate"]


ToolSpec = Annotated[PythonTool | BuiltinTool, Field(discriminator="type")]


class PythonEnvironment(_Strict):
    """An environment class in Python source, instantiated in the job's sandbox once per rollout: `reset(**row)`
    may return text appended to the prompt, its public methods are the model's tools, and an optional
    `get_reward()` scores the finished rollout."""

    type: Literal["python"]
    source: str = Field(min_length=1, description="Python source defining the environment class.")
    class_name: str = Field(alias="class", min_length=1, description="The class TRL instantiates per rollout.")


class AgentSpec(Protocol):
    """What has an agent's tools and environments: a job spec, or a tool preview's request."""

    @property
    def tools(self) -> list[PythonTool | BuiltinTool]: ...

    @property
    def environment_factory(self) -> PythonEnvironment | dict[str, PythonEnvironment] | None: ...


def _environments(factory: Any) -> list[tuple[str, PythonEnvironment]]:
    if factory is None:
        return []
    if isinstance(factory, PythonEnvironment):
        return [("environment_factory", factory)]
    return [(f"environment_factory.{name}", environment) for name, environment in factory.items()]


def _name_clashes(named: list[tuple[str, str]]) -> list[Problem]:
    """Two tools offered under one name: TRL keeps only the last, so the model could never call the first."""
    first: dict[str, str] = {}
    problems = []
    for path, name in named:
        if name in first and first[name] != path:
            problems.append(
                Problem(path, f"{path} and {first[name]} both offer a tool named {name!r}: rename one of them")
            )
        first.setdefault(name, path)
    return problems


def _environment_column(spec: Any, names: list[str]) -> list[Problem]:
    """With a dict of environments, each row names one of them in its `environment` column (as TRL requires)."""
    rows = getattr(spec.train_dataset, "rows", None)
    if rows is None:
        return []  # a file, a path or a hub dataset: the worker's TRL checks the values
    column_map = getattr(spec.train_dataset, "column_map", None) or {}
    column = next((source for source, target in column_map.items() if target == "environment"), "environment")
    missing = [index for index, row in enumerate(rows) if column not in row]
    if missing:
        return [
            Problem(
                f"train_dataset.rows[{missing[0]}]",
                f"environment_factory is a dict of environments, so every row needs an 'environment' column naming "
                f"one ({', '.join(names)}): rows[{missing[0]}] has none",
            )
        ]
    unknown = [(index, row[column]) for index, row in enumerate(rows) if row[column] not in names]
    if unknown:
        index, value = unknown[0]
        return [
            Problem(
                f"train_dataset.rows[{index}].environment",
                f"rows[{index}] names the environment {value!r}, which environment_factory does not define "
                f"(it has: {', '.join(names)})",
            )
        ]
    return []


def check_agent_sources(spec: AgentSpec) -> tuple[list[Problem], bool]:
    """Problems of the tools' and environments' sources (and two tools of one name); and whether an environment
    scores rollouts itself (get_reward)."""
    problems: list[Problem] = []
    named: list[tuple[str, str]] = []
    for index, tool in enumerate(spec.tools):
        path = f"tools[{index}]"
        if isinstance(tool, PythonTool):
            shapes, found = read_tools(tool, path)
            problems += found
            named += [(path, shape.name) for shape in shapes]
        else:
            named.append((path, tool.name))
    scores_itself = False
    for path, environment in _environments(spec.environment_factory):
        shape, found = read_environment(environment, path)
        problems += found
        scores_itself = scores_itself or shape.has_get_reward
        problems += _name_clashes(named + [(path, tool.name) for tool in shape.tools])
    if spec.environment_factory is None:
        problems += _name_clashes(named)
    return problems, scores_itself


def check_agents(spec: Any) -> list[Problem]:
    """Problems of a JobSpec's tools and environments, and of what they change in the rest of the spec: a dataset
    may be left out, and the rewards may be empty, only where an environment takes their place."""
    problems, scores_itself = check_agent_sources(spec)
    problems += _data_and_rewards(spec, scores_itself)
    if isinstance(spec.environment_factory, dict) and spec.train_dataset is not None:
        problems += _environment_column(spec, list(spec.environment_factory))
    return problems


def _data_and_rewards(spec: Any, scores_itself: bool) -> list[Problem]:
    problems = []
    if spec.train_dataset is None:
        steps = spec.args.get("max_steps")
        if spec.environment_factory is None:
            problems.append(
                Problem(
                    "train_dataset",
                    "train_dataset is required (rows, a file_id, a path or a hub dataset), unless an "
                    "environment_factory owns the data",
                )
            )
        elif isinstance(spec.environment_factory, dict):
            problems.append(
                Problem(
                    "train_dataset",
                    "a dict of environments needs a train_dataset whose 'environment' column picks one per row: add "
                    "one, or give a single environment class",
                )
            )
        elif not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            problems.append(
                Problem(
                    "args.max_steps",
                    "without a train_dataset the environment owns the data, so args.max_steps must say how long to "
                    "train: set it to a positive number",
                )
            )
    if not spec.reward_funcs and not scores_itself:
        problems.append(
            Problem(
                "reward_funcs",
                "reward_funcs is empty: add a reward function, or give the environment_factory class a get_reward() "
                "method that scores each rollout",
            )
        )
    return problems
