"""The built-in tools (`{"type": "builtin", "name": ...}` in a spec's `tools`).

This file's text is handed to the job's sandbox as a tool source, like a user's: the built-ins run under the same
confinement, so a model that talks `python_eval` into something unexpected meets the sandbox, not the trainer. Each
function's type hints and docstring are the schema the model sees. Standard library only.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any

_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_SAFE_BUILTINS = {"abs": abs, "min": min, "max": max, "round": round, "len": len, "sum": sum, "sorted": sorted}
# The largest number an arithmetic step may make, in bits: what a model asks must not run for minutes.
_LARGEST_BITS = 100_000
# What python_eval may contain: expressions of literals, operators, subscripts and calls of the safe built-ins. No
# attributes (a generator's frame leads to every module's globals), no lambdas, comprehensions or `:=`.
_EVAL_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)


def _arithmetic(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        result: float | int = _OPERATORS[type(node.op)](_arithmetic(node.operand))
        return result
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        _check_size(node.op, left, right)
        combined: float | int = _OPERATORS[type(node.op)](left, right)
        return combined
    raise ValueError(f"only numbers and + - * / // % ** ( ) are allowed, not {ast.unparse(node)!r}")


def _bits(value: float | int) -> float:
    return math.log2(abs(value)) + 1 if value else 0.0


def _check_size(operator_: ast.operator, left: float | int, right: float | int) -> None:
    if isinstance(operator_, ast.Pow):
        grows = _bits(left) * abs(right) if abs(left) > 1 else 0.0
    elif isinstance(operator_, ast.Mult):
        grows = _bits(left) + _bits(right)
    else:
        return
    if grows > _LARGEST_BITS:
        raise ValueError(f"the result would have about {int(grows)} bits: at most {_LARGEST_BITS} are computed")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression, with numbers, + - * / // % ** and parentheses, e.g. "(3 + 4) * 2".
    """
    value = _arithmetic(ast.parse(expression.strip(), mode="eval"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def python_eval(expression: str) -> str:
    """Evaluate one Python expression and return its value: literals, operators, subscripts and calls of abs,
    min, max, round, len, sum and sorted (no other names, no attributes).

    Args:
        expression: A Python expression, e.g. "sorted([3, 1, 2])[-1]" or "max(len('abc'), 2) * 10".
    """
    tree = ast.parse(expression.strip(), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _EVAL_NODES):
            raise ValueError(
                f"{type(node).__name__} is not allowed: only literals, operators and calls of "
                f"{', '.join(_SAFE_BUILTINS)}"
            )
        if isinstance(node, ast.Name) and node.id not in _SAFE_BUILTINS:
            raise ValueError(f"the name {node.id!r} is not defined: only {', '.join(_SAFE_BUILTINS)} are")
        if isinstance(node, ast.BinOp):
            # Literal operands are checked before anything runs: 'a' * 10**9 is refused, not built.
            sides = [side.value for side in (node.left, node.right) if isinstance(side, ast.Constant)]
            numbers = [v for v in sides if isinstance(v, int | float) and not isinstance(v, bool)]
            if len(numbers) == 2:
                _check_size(node.op, numbers[0], numbers[1])
    return repr(eval(compile(tree, "<expression>", "eval"), {"__builtins__": _SAFE_BUILTINS}))


def regex_match(pattern: str, text: str) -> str:
    """Search a text for a regular expression; returns the match and its groups, or that there is none.

    Args:
        pattern: A Python regular expression, e.g. "(\\d+)-(\\d+)".
        text: The text to search.
    """
    found = re.search(pattern, text)
    if found is None:
        return "no match"
    return json.dumps({"match": found.group(0), "groups": list(found.groups()), "span": list(found.span())})


def json_validate(document: str, required_keys: list[str] | None = None) -> str:
    """Check that a text is valid JSON, optionally an object with the given keys.

    Args:
        document: The JSON text to check.
        required_keys: Keys the JSON object must have (optional).
    """
    try:
        value = json.loads(document)
    except json.JSONDecodeError as error:
        return f"invalid JSON: {error}"
    missing = [key for key in required_keys or [] if not isinstance(value, dict) or key not in value]
    if missing:
        return f"valid JSON, but missing the key(s): {', '.join(missing)}"
    return "valid JSON"
