"""Python reward sources, read at submit time without running them.

A source must compile, define the function TRL will call, let TRL call it as it calls reward functions (every
argument by keyword, `**kwargs` for what it does not name), and define every name it uses. What it requires
beyond TRL's own keyword arguments must come from dataset columns.
"""

from __future__ import annotations

import ast
import builtins
import symtable
from dataclasses import dataclass, field

from shared.spec.problems import Problem, did_you_mean

# Keyword arguments TRL passes to every reward function besides the dataset columns (GRPOTrainer._calculate_rewards).
TRL_REWARD_KWARGS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
# Dataset columns TRL does not pass on to reward functions (it passes `prompts`, `completions`, ... instead).
COLUMNS_NOT_PASSED = frozenset({"prompt", "completion", "completion_ids"})
# Errors Python's own parsers raise on sources they cannot take.
UNREADABLE = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)


@dataclass
class RewardSource:
    """What reading a reward source found: the function TRL calls, the columns it needs, its problems."""

    function: str | None = None
    required_columns: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _module_names(module: symtable.SymbolTable) -> set[str]:
    """Names the module defines: assigned or imported at top level, or assigned in a function under `global`."""
    names = {s.get_name() for s in module.get_symbols() if s.is_assigned() or s.is_imported()}
    pending = list(module.get_children())
    while pending:
        table = pending.pop()
        names |= {s.get_name() for s in table.get_symbols() if s.is_declared_global() and s.is_assigned()}
        pending += table.get_children()
    return names


def _undefined_names(source: str, filename: str) -> dict[str, list[str]]:
    """Names each top-level scope reads that nothing defines (not the module, not builtins)."""
    module = symtable.symtable(source, filename, "exec")
    if any(s.get_name() == "*" for s in module.get_symbols()):
        return {}  # `from x import *` defines names we cannot see
    known = _module_names(module) | set(dir(builtins))
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


def _parameter_problems(node: ast.FunctionDef | ast.AsyncFunctionDef, path: str) -> tuple[list[str], list[Problem]]:
    """The parameters the function requires (no default), and what keeps TRL from calling it."""
    name, arguments, problems = node.name, node.args, []
    if arguments.posonlyargs:
        problems.append(
            Problem(
                f"{path}.source",
                f"{name}() takes {', '.join(a.arg for a in arguments.posonlyargs)} positionally only, but TRL passes "
                "every argument by keyword: remove the `/`",
            )
        )
    if arguments.kwarg is None:
        problems.append(
            Problem(
                f"{path}.source",
                f"{name}() must accept **kwargs: TRL calls reward functions with prompts, completions, "
                "completion_ids, trainer_state and every dataset column as keyword arguments",
            )
        )
    positional = arguments.posonlyargs + arguments.args
    required = [a.arg for a in positional[: len(positional) - len(arguments.defaults)]]
    required += [a.arg for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is None]
    for parameter in required:
        if parameter in COLUMNS_NOT_PASSED:
            problems.append(
                Problem(
                    f"{path}.source",
                    f"{name}() requires {parameter!r}, which TRL does not pass to reward functions: use "
                    f"{'prompts' if parameter == 'prompt' else 'completions'} (one entry per completion)",
                )
            )
    return [p for p in required if p not in TRL_REWARD_KWARGS and p not in COLUMNS_NOT_PASSED], problems


def read_reward_source(source: str, function: str | None, path: str) -> RewardSource:
    """Read a Python reward source as TRL will use it; never runs it."""
    filename = f"<{path}>"
    try:
        tree = ast.parse(source, filename=filename)
        compile(tree, filename, "exec")  # what only the compiler checks: `return` outside a function, ...
        undefined = _undefined_names(source, filename)
    except UNREADABLE as error:
        line = f"line {error.lineno}: " if isinstance(error, SyntaxError) and error.lineno else ""
        reason = error.msg if isinstance(error, SyntaxError) else f"{type(error).__name__}: {error}".rstrip(": ")
        return RewardSource(problems=[Problem(f"{path}.source", f"{path}.source is not valid Python: {line}{reason}")])

    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if not functions:
        return RewardSource(
            problems=[
                Problem(
                    f"{path}.source",
                    f"{path}.source defines no function: define `def my_reward(completions, **kwargs)` returning one "
                    "float per completion",
                )
            ]
        )
    if function is None and len(functions) > 1:
        return RewardSource(
            problems=[
                Problem(
                    f"{path}.function",
                    f"{path}.source defines {len(functions)} functions ({', '.join(functions)}): set {path}.function "
                    "to the one TRL should call",
                )
            ]
        )
    name = function or next(iter(functions))
    if name not in functions:
        return RewardSource(
            problems=[
                Problem(
                    f"{path}.function",
                    f"{path}.function is {name!r}, which the source does not define{did_you_mean(name, functions)}",
                )
            ]
        )
    required, problems = _parameter_problems(functions[name], path)
    for scope, names in undefined.items():
        where = "the source" if scope == "<module>" else f"{scope}()"
        problems.append(
            Problem(
                f"{path}.source",
                f"{where} uses {', '.join(sorted(set(names)))}, which the source neither defines nor imports",
            )
        )
    return RewardSource(name, required, problems)
