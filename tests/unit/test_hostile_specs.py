"""Whatever JSON arrives, validation answers with problems (a 422), never with an exception (a 500)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.spec.job import parse_spec
from shared.spec.problems import SpecError
from shared.spec.reward_source import read_reward_source
from tests.specs import job_spec, python_reward


def verdict(payload: Any) -> list[str] | None:
    """None when accepted, else the problem messages; any other exception fails the test."""
    try:
        parse_spec(payload)
    except SpecError as error:
        assert error.problems, "a SpecError must name at least one problem"
        return [p.message for p in error.problems]
    return None


def spec_with(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(job_spec("m"))
    spec.update(changes)
    return spec


def with_source(source: str) -> dict[str, Any]:
    return spec_with(reward_funcs=[python_reward(source)])


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "spec",
        42,
        spec_with(train_dataset="x"),
        spec_with(train_dataset=[1]),
        spec_with(eval_dataset=5),
        spec_with(train_dataset={"rows": [1, 2]}),
        spec_with(train_dataset={"rows": "abc"}),
        spec_with(reward_funcs="length"),
        spec_with(reward_funcs=[None]),
        spec_with(args=[1, 2]),
        spec_with(args={"num_generations": 10**30}),
        spec_with(name="a" * 10_000),
    ],
    ids=repr,
)
def test_malformed_structure_is_refused_with_problems(payload: Any) -> None:
    assert verdict(payload)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def r(completions, **kw):\n    nonlocal x\n    return [0.0]\n", "not valid Python"),
        ("def r(completions, completions, **kw):\n    return [0.0]\n", "not valid Python"),
        ("from __future__ import braces\ndef r(completions, **kw):\n    return [0.0]\n", "not valid Python"),
        ("return 1\ndef r(completions, **kw):\n    return [0.0]\n", "not valid Python: line 1: 'return' outside"),
        ("def r(completions, **kw):\n    return [0]" + ".a" * 100_000 + "\n", "not valid Python"),
        ("def r(completions, **kw):\n    return [" + "-" * 100_000 + "1]\n", "not valid Python"),
        ("def r(completions, **kw):\n    return [0.0]\x00\n", "NUL character"),
        ("def r(completions, /, **kw):\n    return [0.0]\n", "positionally only"),
        ("def r(completions, prompt, **kw):\n    return [0.0]\n", "requires 'prompt', which TRL does not pass"),
    ],
)
def test_reward_sources_python_cannot_take_are_refused(source: str, expected: str) -> None:
    problems = verdict(with_source(source))
    assert problems and any(expected in p for p in problems), problems


def test_reading_a_source_with_a_nul_byte_is_a_problem_not_an_error() -> None:
    source = read_reward_source("def r(completions, **kw):\n    return [0.0]\x00\n", None, "reward_funcs[0]")
    assert [p.message for p in source.problems] == [
        "reward_funcs[0].source is not valid Python: source code string cannot contain null bytes"
    ]


def test_a_global_set_by_a_helper_counts_as_defined() -> None:
    source = (
        "def _load():\n    global TABLE\n    TABLE = {'a': 1.0}\n\n_load()\n\n"
        "def score(completions, **kwargs):\n    return [TABLE.get(c, 0.0) for c in completions]\n"
    )
    assert verdict(spec_with(reward_funcs=[python_reward(source, function="score")])) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"args": {**job_spec("m")["args"], "learning_rate": float("nan")}},
        {"args": {**job_spec("m")["args"], "learning_rate": float("inf")}},
        {"train_dataset": {"rows": [{"prompt": "p", "weight": float("nan")}]}},
        {"name": "nul \x00 inside"},
        {"train_dataset": {"rows": [{"prompt": "p\x00"}]}},
    ],
    ids=["nan-arg", "inf-arg", "nan-row", "nul-name", "nul-row"],
)
def test_values_json_or_postgres_cannot_store_are_refused(changes: dict[str, Any]) -> None:
    problems = verdict(spec_with(**changes))
    assert problems and any("NUL character" in p or "not a number JSON can carry" in p for p in problems), problems


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"prompt": "a"}, {"prompt": [{"role": "user", "content": "b"}]}], "rows[1].prompt is a list where"),
        (
            [{"prompt": "a", "n": 1}, {"prompt": "b", "n": "two"}],
            "rows[1].n is a string where earlier rows have a number",
        ),
        ([{"prompt": [{"role": "user", "content": None}]}], "needs a non-empty 'prompt'"),
        ([{"prompt": "a", "prompts": "x"}], "which TRL already passes to reward functions"),
    ],
)
def test_rows_arrow_or_trl_cannot_take_are_refused(rows: list[dict[str, Any]], expected: str) -> None:
    problems = verdict(spec_with(train_dataset={"rows": rows}))
    assert problems and any(expected in p for p in problems), problems


def test_reward_columns_are_checked_against_the_eval_rows_too() -> None:
    source = "def exact(completions, answer, **kwargs):\n    return [0.0 for c in completions]\n"
    spec = spec_with(
        train_dataset={"rows": [{"prompt": "p", "answer": "1"}]},
        eval_dataset={"rows": [{"prompt": "p"}]},
        reward_funcs=[python_reward(source)],
    )
    spec["args"].update(eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4)
    problems = verdict(spec)
    assert problems and any("but eval_dataset has prompt" in p for p in problems), problems


def test_huge_numbers_get_an_answer_not_a_hang() -> None:
    for batch, groups in ((3, 10**12 + 1), (10**12 + 1, 3), (10**9 + 7, 10**9 + 9)):
        problems = verdict(spec_with(args={"per_device_train_batch_size": batch, "num_generations": groups}))
        assert problems and "must be divisible by args.num_generations" in problems[0]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_gets_problems_or_acceptance(payload: Any) -> None:
    verdict(payload)


def test_a_top_level_field_named_like_pydantics_key_marker_is_an_unknown_field() -> None:
    # Found by the test above: pydantic marks a bad dict key with "[key]" in the error's location, and a spec with
    # a field of that name once read as a bad key of nothing (an IndexError: a 500).
    with pytest.raises(SpecError) as refused:
        parse_spec({**job_spec("tiny-model"), "[key]": None})
    assert [problem.field for problem in refused.value.problems] == ["[key]"]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "num_generations",
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "generation_batch_size",
                "steps_per_generation",
                "eval_strategy",
                "logging_steps",
                "save_steps",
                "loss_type",
                "beta",
                "reward_weights",
                "load_best_model_at_end",
                "lr_scheduler_type",
                "max_completion_length",
                "pad_to_multiple_of",
                "debug",
                "report_to",
                "accelerator_config",
                "temperature",
                "max_steps",
            ]
        ),
        JSON,
        max_size=5,
    )
)
def test_any_args_get_problems_or_acceptance(args: dict[str, Any]) -> None:
    verdict(spec_with(args=args))
