"""The built-in tools (`{"type": "builtin", "name": ...}` in a spec's `tools`).

This file's text is handed to the job's sandbox as a tool source, like a user's: the built-ins run under the same
confinement, so a model that talks `python_eval` into something unexpected meets the sandbox, not the trainer. Each
function's type hints and docstring are the schema the model sees. Standard library only.
"""

from __future__ import annotations

import ast
import json
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
_LARGEST_POWER = 10_000


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
        if isinstance(node.op, ast.Pow) and abs(right) > _LARGEST_POWER:
            raise ValueError(f"the exponent {right} is too large")
        combined: float | int = _OPERATORS[type(node.op)](left, right)
        return combined
    raise ValueError(f"only numbers and + - * / // % ** ( ) are allowed, not {ast.unparse(node)!r}")


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
    """Evaluate one Python expression and return its value (only abs, min, max, round, len, sum and sorted are
    available; no imports, no names).

    Args:
        expression: A Python expression, e.g. "sorted([3, 1, 2])" or "sum(x * x for x in range(5))".
    """
    tree = ast.parse(expression.strip(), mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError(f"attribute {node.attr!r} is not allowed")
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
