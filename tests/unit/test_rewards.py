"""Reward specs turned into the callables TRL calls: built-ins, Python sources, and their errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.spec import JobSpec, PythonReward
from tests.specs import job_spec, python_reward, seed_example
from worker.model_paths import ModelNotFound
from worker.rewards import RewardFunctionError, build_reward_funcs, compile_python_reward

TRL_KWARGS = {"prompts": ["p", "p"], "completion_ids": [[1], [2]], "trainer_state": None}


def rewards_of(*specs: dict) -> list:  # type: ignore[type-arg]
    return build_reward_funcs(JobSpec.model_validate(job_spec("m", reward_funcs=list(specs))).reward_funcs)


def test_builtin_length_is_the_seeds_formula() -> None:
    (length,) = rewards_of({"type": "builtin", "name": "length", "params": {"ideal_length": 20}})
    completions = ["x" * 20, "x" * 5, "x" * 31, ""]
    assert length(completions=completions, **TRL_KWARGS) == [0.0, -15.0, -11.0, -20.0]
    assert length.__name__ == "length"  # TRL's metric key: rewards/length/mean


def test_builtin_length_reads_conversational_completions() -> None:
    (length,) = rewards_of({"type": "builtin", "name": "length", "params": {"ideal_length": 3}})
    completions = [[{"role": "assistant", "content": "hello"}]]
    assert length(completions=completions, **TRL_KWARGS) == [-2.0]


def test_seed_rewards_score_as_the_seed_says() -> None:
    reward_len, format_reward, problem_reward = build_reward_funcs(
        JobSpec.model_validate(seed_example("m")).reward_funcs
    )
    assert [f.__name__ for f in (reward_len, format_reward, problem_reward)] == [
        "reward_len",
        "format_reward",
        "problem_reward",
    ]
    assert reward_len(completions=["a" * 20, "a" * 25], **TRL_KWARGS) == [0, -5]
    thought = "<think>Two plus two makes four, surely.</think><answer>4</answer>"
    thin = "<think>hm</think> <answer>4</answer>"
    assert format_reward(completions=[thought, thin, "4"], **TRL_KWARGS) == [1.0, 0.5, 0.0]
    # Dataset columns reach the reward as keyword arguments, as TRL passes them.
    assert problem_reward(completions=[thought, "the answer is 5", ""], answers=["4", "4", "4"], **TRL_KWARGS) == [
        1.0,
        0.0,
        0.0,
    ]


def test_a_raising_reward_names_the_function_and_the_line() -> None:
    source = "def boom(completions, **kwargs):\n    scale = 0\n    return [1 / scale for c in completions]\n"
    reward = compile_python_reward(PythonReward.model_validate(python_reward(source)), "reward_funcs[0]")
    with pytest.raises(RewardFunctionError) as caught:
        reward(completions=["a"], **TRL_KWARGS)
    assert str(caught.value) == (
        "reward function 'boom' raised ZeroDivisionError: division by zero "
        "(reward_funcs[0] line 3: return [1 / scale for c in completions])"
    )


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("'nope'", "returned str, not a list"),
        ("['a' for c in completions]", "returned 'a' at index 0"),
        ("[float('nan') for c in completions]", "returned nan at index 0"),
        ("[True for c in completions]", "True"),
    ],
)
def test_rewards_that_are_not_numbers_fail_clearly(returned: str, expected: str) -> None:
    source = f"def bad(completions, **kwargs):\n    return {returned}\n"
    reward = compile_python_reward(PythonReward.model_validate(python_reward(source)), "reward_funcs[0]")
    with pytest.raises(RewardFunctionError, match="reward function 'bad'") as caught:
        reward(completions=["a"], **TRL_KWARGS)
    assert expected in str(caught.value)


def test_none_keeps_trls_meaning_of_skip() -> None:
    source = "def maybe(completions, **kwargs):\n    return [None, 1.0]\n"
    reward = compile_python_reward(PythonReward.model_validate(python_reward(source)), "reward_funcs[0]")
    assert reward(completions=["a", "b"], **TRL_KWARGS) == [None, 1.0]


def test_async_rewards_stay_async() -> None:
    source = "async def slow(completions, **kwargs):\n    return [1.0 for c in completions]\n"
    reward = compile_python_reward(PythonReward.model_validate(python_reward(source)), "reward_funcs[0]")
    assert asyncio.iscoroutinefunction(reward)
    assert asyncio.run(reward(completions=["a"], **TRL_KWARGS)) == [1.0]


def test_source_that_fails_on_import_names_the_reward() -> None:
    source = "import no_such_module_here\n\ndef r(completions, **kwargs):\n    return [0.0]\n"
    with pytest.raises(RewardFunctionError, match=r"reward_funcs\[0\]: running the source raised ModuleNotFoundError"):
        compile_python_reward(PythonReward.model_validate(python_reward(source)), "reward_funcs[0]")


def test_model_rewards_pass_through_to_trl(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert rewards_of({"type": "model", "model": str(tmp_path)}) == [str(tmp_path)]
    assert rewards_of({"type": "model", "model": "org/reward"}) == ["org/reward"]  # a hub id: TRL loads it
    with pytest.raises(ModelNotFound, match=r"reward_funcs\[0\].model '/no/such/model' does not exist"):
        rewards_of({"type": "model", "model": "/no/such/model"})
