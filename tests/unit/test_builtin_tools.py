"""The built-in tools, as a model calls them: right answers, and what a hostile or careless call is refused (they run
in the sandbox anyway; these rules keep the reward functions beside them out of reach and the calls short)."""

from __future__ import annotations

import pytest

from sandbox.builtin_tools import calculator, json_validate, python_eval, regex_match


def test_the_built_ins_answer() -> None:
    assert calculator("(3 + 4) * 2") == "14" and calculator("7 / 2") == "3.5"
    assert python_eval("sorted([3, 1, 2])[-1]") == "3" and python_eval("max(len('abc'), 2) * 10") == "30"
    assert regex_match(r"(\d+)-(\d+)", "pages 3-7") == '{"match": "3-7", "groups": ["3", "7"], "span": [6, 9]}'
    assert json_validate('{"a": 1}', ["a", "b"]) == "valid JSON, but missing the key(s): b"


@pytest.mark.parametrize(
    "expression",
    [
        # A generator's frame leads to the sandbox server's globals, and from there to every module.
        "(g := (g.gi_frame.f_back.f_globals for x in [1]))",
        "[x for x in [1]]",
        "(lambda: 1)()",
        "open('secret')",
        "().__class__",
        "__import__('os')",
    ],
)
def test_python_eval_refuses_what_reaches_beyond_an_expression(expression: str) -> None:
    with pytest.raises(ValueError, match=r"not allowed|not defined"):
        python_eval(expression)


@pytest.mark.parametrize("expression", ["(9**9999)**9999", "10**100000", "2 ** 10 ** 10"])
def test_arithmetic_that_would_run_for_minutes_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="at most 100000 are computed"):
        calculator(expression)
