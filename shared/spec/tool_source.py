"""Tool and environment sources, read without running them: what the trainer's stand-ins show TRL.

TRL (through transformers' `get_json_schema`) turns each tool's type hints and Google-style docstring into the
JSON schema the chat template shows the model. This module reads them from the source's syntax tree: each
function's name, parameters (their hints evaluated from a small vocabulary of types), defaults and docstring, and
what would keep transformers from building the schema (a parameter without a hint or a description, a custom class
as a type), naming the parameter.
"""

from __future__ import annotations

import ast
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.spec.problems import Problem

# Methods of an environment that TRL calls itself; every other public method is a tool.
ENVIRONMENT_HOOKS = ("reset", "get_reward")
# Type hints a tool may use: what transformers' schema builder understands, and nothing that needs an import.
_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "None": None,
    "Any": Any,
    "Optional": typing.Optional,
    "Union": typing.Union,
    "Literal": typing.Literal,
    "List": list,
    "Dict": dict,
    "Tuple": tuple,
}
_HINT_NODES = (ast.Expression, ast.Name, ast.Subscript, ast.Tuple, ast.Constant, ast.BinOp, ast.BitOr, ast.Load)
# transformers' own Google-docstring patterns (transformers/utils/chat_template_utils.py), so that a docstring
# passes here exactly when get_json_schema accepts it.
_ARGS_BLOCK = re.compile(r"\n\s*Args:\n\s*(.*?)[\n\s]*(Returns:|Raises:|\Z)", re.DOTALL)
_ARG = re.compile(r"(?:^|\n)\s*(\w+):\s*(.*?)\s*(?=\n\s*\w+:|\Z)", re.DOTALL)


class ToolSource(Protocol):
    """Python source offering tools: `function` names them (None: every public top-level function)."""

    @property
    def source(self) -> str: ...

    @property
    def function(self) -> str | list[str] | None: ...


class EnvironmentSource(Protocol):
    """Python source of an environment class."""

    @property
    def source(self) -> str: ...

    @property
    def class_name(self) -> str: ...


@dataclass(frozen=True)
class ToolParameter:
    name: str
    hint: str  # the type hint as written
    required: bool
    default: Any = None  # a literal default (only when not required)


@dataclass(frozen=True)
class ToolShape:
    """A tool as the trainer's stand-in shows it to TRL: name, parameters, docstring, and whether it is async."""

    name: str
    parameters: tuple[ToolParameter, ...]
    doc: str
    is_async: bool = False


@dataclass
class EnvironmentShape:
    """An environment class as read from its source: its tools, and whether it scores rollouts itself."""

    name: str
    tools: list[ToolShape] = field(default_factory=list)
    has_reset: bool = False
    has_get_reward: bool = False


def type_hint(text: str) -> Any:
    """The type a hint written as `text` names (`int`, `list[str]`, `Literal["a", "b"]`, `float | None`, ...);
    ValueError for anything else."""
    tree = ast.parse(text, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _HINT_NODES) or (isinstance(node, ast.Name) and node.id not in _TYPES):
            raise ValueError(f"the type hint {text!r} is not one the tool schema can show")
        if isinstance(node, ast.Constant) and not isinstance(node.value, str | int | float | bool | type(None)):
            raise ValueError(f"the type hint {text!r} is not one the tool schema can show")
    try:  # the nodes are checked above: names of types, subscripts, `|` and literals only
        return eval(compile(tree, "<type hint>", "eval"), {"__builtins__": {}}, dict(_TYPES))
    except (TypeError, RecursionError):  # `"a" | "b"`, `Union[()]`: no type at all
        raise ValueError(f"the type hint {text!r} is not one the tool schema can show") from None


def _described(doc: str) -> set[str]:
    block = _ARGS_BLOCK.search(doc)
    if block is None:
        return set()
    lines = "\n".join(line for line in block.group(1).strip().split("\n") if line.strip())
    return {match[0] for match in _ARG.findall(lines)}


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, RecursionError):
        raise ValueError("its default is not a literal (a number, a string, a list ...)") from None


def read_tool(
    node: ast.FunctionDef | ast.AsyncFunctionDef, path: str, method: bool = False
) -> tuple[ToolShape, list[Problem]]:
    """The tool a function definition makes, and what keeps transformers from building its schema."""
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args]
    if method and positional:
        positional = positional[1:]  # self
    problems: list[Problem] = []
    where = f"{path}.source"
    if arguments.vararg is not None or arguments.kwarg is not None:
        problems.append(Problem(where, f"{node.name}() takes *args or **kwargs: a tool lists each parameter by name"))
    doc = ast.get_docstring(node) or ""
    if not doc.strip():
        problems.append(
            Problem(where, f"{node.name}() has no docstring: describe what it does, and each parameter under `Args:`")
        )
    described = _described("\n" + doc.strip())
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    keyword = list(zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True))
    parameters = []
    for argument, default in [*zip(positional, defaults, strict=True), *keyword]:
        label = f"parameter {argument.arg!r} of {node.name}()"
        if argument.annotation is None:
            problems.append(
                Problem(where, f"{label} has no type hint: add one (int, float, str, bool, list[...], ...)")
            )
            continue
        hint = ast.unparse(argument.annotation)
        try:
            type_hint(hint)
            value = None if default is None else _literal(default)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError) as error:
            problems.append(Problem(where, f"{label}: {error}"))
            continue
        if doc.strip() and argument.arg not in described:
            problems.append(
                Problem(where, f"{label} is not described in the docstring: add `{argument.arg}: ...` under `Args:`")
            )
        parameters.append(ToolParameter(argument.arg, hint, default is None, value))
    shape = ToolShape(node.name, tuple(parameters), doc, isinstance(node, ast.AsyncFunctionDef))
    return shape, problems


def _parse(source: str, path: str) -> tuple[ast.Module | None, list[Problem]]:
    try:
        return ast.parse(source), []
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        line = f" (line {error.lineno})" if isinstance(error, SyntaxError) and error.lineno else ""
        return None, [Problem(f"{path}.source", f"the source does not compile{line}: {error}")]


def _functions(module: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {node.name: node for node in module.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def read_tools(spec: ToolSource, path: str) -> tuple[list[ToolShape], list[Problem]]:
    """The tools a Python tool spec defines, and its problems."""
    module, problems = _parse(spec.source, path)
    if module is None:
        return [], problems
    functions = _functions(module)
    if spec.function is None:
        names = [name for name in functions if not name.startswith("_")]
        if not names:
            return [], [Problem(f"{path}.source", "the source defines no public function to offer as a tool")]
    else:
        names = [spec.function] if isinstance(spec.function, str) else list(spec.function)
    shapes = []
    for name in names:
        if name not in functions:
            problems.append(
                Problem(
                    f"{path}.function",
                    f"the source defines no top-level function {name!r} (it has: {', '.join(functions) or 'none'})",
                )
            )
            continue
        shape, found = read_tool(functions[name], path)
        shapes.append(shape)
        problems += found
    return shapes, problems


def _class_bodies(module: ast.Module, name: str, path: str) -> tuple[list[ast.ClassDef], list[Problem]]:
    """The class and the bases it inherits from in the same source, nearest first (TRL lists inherited methods)."""
    classes = {node.name: node for node in module.body if isinstance(node, ast.ClassDef)}
    found, pending, problems = [], [name], []
    while pending:
        current = pending.pop(0)
        node = classes.get(current)
        if node is None:
            problems.append(
                Problem(
                    f"{path}.class", f"the source defines no class {current!r} (it has: {', '.join(classes) or 'none'})"
                )
            )
            continue
        found.append(node)
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                pending.append(base.id)
            elif not (isinstance(base, ast.Name) and base.id == "object"):
                problems.append(
                    Problem(
                        f"{path}.source",
                        f"class {current} inherits from {ast.unparse(base)}: an environment may inherit only from "
                        "classes of its own source (its tools are read from them)",
                    )
                )
    return found, problems


def read_environment(spec: EnvironmentSource, path: str) -> tuple[EnvironmentShape, list[Problem]]:
    """The environment a spec defines: its tools, `reset` and `get_reward`, and its problems."""
    shape = EnvironmentShape(spec.class_name)
    module, problems = _parse(spec.source, path)
    if module is None:
        return shape, problems
    bodies, problems = _class_bodies(module, spec.class_name, path)
    seen: set[str] = set()
    for body in bodies:
        for node in body.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name in seen:
                continue
            seen.add(node.name)
            if node.name == "reset":
                shape.has_reset = True
            elif node.name == "get_reward":
                shape.has_get_reward = True
            elif not node.name.startswith("_"):
                tool, found = read_tool(node, path, method=True)
                shape.tools.append(tool)
                problems += found
    if bodies and not shape.has_reset:
        problems.append(
            Problem(
                f"{path}.source",
                f"class {spec.class_name} has no `reset` method: TRL calls reset(**row) to start "
                "each rollout (it may return text to append to the prompt)",
            )
        )
    return shape, problems
