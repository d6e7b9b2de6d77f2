"""Reward specs turned into the callables TRL calls: the built-ins on hand-written cases (the seed's examples with
their exact values), and users' Python rewards in their sandbox (real sandbox processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.client import SandboxLimits
from shared.spec.job import JobSpec
from tests.specs import job_spec, python_reward, seed_example
from worker.model_paths import ModelNotFound
from worker.rewards import RewardFunctionError, Rewards, build_reward_funcs

TRL_KWARGS: dict[str, Any] = {"prompts": ["p", "p"], "completion_ids": [[1], [2]], "trainer_state": None}
THOUGHT = "<think>Two plus two makes four, surely.</think><answer>4</answer>"
THIN = "<think>hm</think> <answer>4</answer>"


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Any]:
    """Build a spec's reward functions (sandbox included); every sandbox is closed after the test."""
    made: list[Rewards] = []

    def build(*specs: dict[str, Any], timeout: float = 30, memory_mb: int = 1024) -> list[Any]:
        reward_funcs = JobSpec.model_validate(job_spec("m", reward_funcs=list(specs))).reward_funcs
        rewards = build_reward_funcs(reward_funcs, tmp_path / f"scratch{len(made)}", SandboxLimits(timeout, memory_mb))
        made.append(rewards)
        return rewards.functions

    yield build
    for rewards in made:
        rewards.close()


def call(reward: Any, completions: list[Any], **columns: Any) -> Any:
    kwargs = {**TRL_KWARGS, "prompts": ["p"] * len(completions), "completion_ids": [[1]] * len(completions)}
    return reward(completions=completions, **kwargs, **columns)


# --- built-ins ---


def test_length_is_the_seeds_formula(built: Any) -> None:
    (length,) = built({"type": "builtin", "name": "length", "params": {"ideal_length": 20}})
    assert call(length, ["x" * 20, "x" * 5, "x" * 31, ""]) == [0.0, -15.0, -11.0, -20.0]
    assert length.__name__ == "length"  # TRL's metric key: rewards/length/mean


def test_builtins_read_conversational_completions(built: Any) -> None:
    length, format_reward = built(
        {"type": "builtin", "name": "length", "params": {"ideal_length": 3}},
        {"type": "builtin", "name": "format"},
    )
    completions = [[{"role": "assistant", "content": "hello"}], [{"role": "assistant", "content": THOUGHT}]]
    assert call(length, completions) == [-2.0, -float(len(THOUGHT) - 3)]
    assert call(format_reward, completions) == [0.0, 1.0]


def test_format_gives_the_seeds_partial_credit(built: Any) -> None:
    (format_reward,) = built({"type": "builtin", "name": "format"})
    no_answer = "<think>Long enough reasoning here, yes indeed.</think><answer></answer>"
    assert call(format_reward, [THOUGHT, THIN, "4", no_answer]) == [1.0, 0.5, 0.0, 0.5]


def test_format_pattern_and_credits_are_configurable(built: Any) -> None:
    spec = {
        "type": "builtin",
        "name": "format",
        "params": {"pattern": r"\[R\](.*?)\[A\](.*)", "min_reasoning_chars": 2, "full_credit": 2, "partial_credit": 1},
    }
    (format_reward,) = built(spec)
    assert call(format_reward, ["[R]because[A]7", "[R]x[A]7", "7"]) == [2.0, 1.0, 0.0]


def test_regex_scores_matches(built: Any) -> None:
    search, full = built(
        {"type": "builtin", "name": "regex", "label": "has_number", "params": {"pattern": r"\d+", "match_score": 2}},
        {
            "type": "builtin",
            "name": "regex",
            "label": "only_yes",
            "params": {"pattern": "yes", "fullmatch": True, "ignore_case": True, "miss_score": -1},
        },
    )
    assert call(search, ["it is 42", "none"]) == [2.0, 0.0]
    assert call(full, ["YES", "yes please"]) == [1.0, -1.0]
    assert (search.__name__, full.__name__) == ("has_number", "only_yes")


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("The answer is $\\frac{1}{2}$", "0.5", 1.0),
        ("so \\boxed{\\frac{3}{4}}", "\\frac{3}{4}", 1.0),
        ("$x = 2\\sqrt{2}$", "\\sqrt{8}", 1.0),
        ("<think>add them</think><answer>4</answer>", "4", 1.0),
        ("The total is 1,000", "1000", 1.0),
        ("$\\frac{1}{3}$", "0.5", 0.0),
        ("<answer>Paris</answer>", "paris", 1.0),  # no math in either: plain equality
        ("<answer>Lyon</answer>", "Paris", 0.0),
    ],
)
def test_accuracy_checks_answers_with_math_verify(built: Any, completion: str, gold: str, expected: float) -> None:
    (accuracy,) = built({"type": "builtin", "name": "accuracy", "params": {"column": "solution"}})
    assert call(accuracy, [completion], solution=[gold]) == [expected]


def test_exact_match_and_its_options(built: Any) -> None:
    plain, loose = built(
        {"type": "builtin", "name": "exact_match", "params": {"strip": False}},
        {"type": "builtin", "name": "exact_match", "label": "loose", "params": {"ignore_case": True}},
    )
    assert call(plain, ["4", " 4", "5"], answer=["4", "4", "4"]) == [1.0, 0.0, 0.0]
    assert call(loose, [" Paris\n", "paris", "Rome"], answer=["PARIS", "Paris", "Paris"]) == [1.0, 1.0, 0.0]


def test_json_valid_with_and_without_a_schema(built: Any) -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    any_json, shaped = built(
        {"type": "builtin", "name": "json_valid"},
        {"type": "builtin", "name": "json_valid", "label": "person", "params": {"schema": schema}},
    )
    completions = ['{"name": "Ada"}', '```json\n{"name": 3}\n```', "not json", "[1, 2]"]
    assert call(any_json, completions) == [1.0, 1.0, 0.0, 1.0]
    assert call(shaped, completions) == [1.0, 0.0, 0.0, 0.0]


def test_a_builtin_missing_its_column_names_it(built: Any) -> None:
    (accuracy,) = built({"type": "builtin", "name": "accuracy"})
    with pytest.raises(RewardFunctionError, match="reads the dataset column 'answer'"):
        call(accuracy, ["4"])


# --- the seed's rewards, in the sandbox ---


def test_seed_rewards_score_as_the_seed_says(tmp_path: Path) -> None:
    rewards = build_reward_funcs(
        JobSpec.model_validate(seed_example("m")).reward_funcs, tmp_path / "scratch", SandboxLimits(30, 1024)
    )
    try:
        reward_len, format_reward, problem_reward = rewards.functions
        assert [f.__name__ for f in rewards.functions] == ["reward_len", "format_reward", "problem_reward"]
        assert call(reward_len, ["a" * 20, "a" * 25]) == [0, -5]
        assert call(format_reward, [THOUGHT, THIN, "4"]) == [1.0, 0.5, 0.0]
        # Dataset columns reach the reward as keyword arguments, as TRL passes them.
        assert call(problem_reward, [THOUGHT, "the answer is 5", ""], answers=["4", "4", "4"]) == [1.0, 0.0, 0.0]
    finally:
        rewards.close()


# --- Python rewards: what they return ---


def test_a_raising_reward_names_the_function_and_the_line(built: Any) -> None:
    source = "def boom(completions, **kwargs):\n    scale = 0\n    return [1 / scale for c in completions]\n"
    (reward,) = built(python_reward(source))
    with pytest.raises(RewardFunctionError) as caught:
        call(reward, ["a"])
    assert str(caught.value) == (
        "reward function 'boom' raised ZeroDivisionError: division by zero "
        "(reward_funcs[0] line 3: return [1 / scale for c in completions])"
    )
    assert caught.value.traceback is not None and "ZeroDivisionError" in caught.value.traceback


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("'nope'", "returned str, not a list"),
        ("['a' for c in completions]", "returned 'a' at index 0"),
        ("[float('nan') for c in completions]", "returned nan at index 0"),
        ("[True for c in completions]", "True"),
        ("[1.0]", "returned 1 value(s) for 2 completion(s)"),
        ("1.0", "returned float, not a list"),
    ],
)
def test_rewards_that_are_not_one_number_per_completion_fail_clearly(built: Any, returned: str, expected: str) -> None:
    source = f"def bad(completions, **kwargs):\n    return {returned}\n"
    (reward,) = built(python_reward(source, on_error="zero"))  # never scored as zero: a wrong list always fails
    with pytest.raises(RewardFunctionError, match="reward function 'bad'") as caught:
        call(reward, ["a", "b"])
    assert expected in str(caught.value)


def test_none_keeps_trls_meaning_of_skip(built: Any) -> None:
    (reward,) = built(python_reward("def maybe(completions, **kwargs):\n    return [None, 1]\n"))
    assert call(reward, ["a", "b"]) == [None, 1.0]


def test_async_rewards_work(built: Any) -> None:
    source = (
        "import asyncio\n\nasync def judge(completions, **kwargs):\n"
        "    await asyncio.sleep(0.01)\n    return [float(len(c)) for c in completions]\n"
    )
    (reward,) = built(python_reward(source))
    assert call(reward, ["ab", "abc"]) == [2.0, 3.0]


def test_reward_gets_every_trl_keyword_and_can_log(built: Any) -> None:
    source = (
        "def spy(prompts, completions, completion_ids, trainer_state, log_metric, answers, **kwargs):\n"
        "    log_metric('spy/seen', len(completions))\n"
        "    assert trainer_state.global_step == 3, trainer_state\n"
        "    return [float(len(p) + len(i) + len(a)) for p, i, a in zip(prompts, completion_ids, answers)]\n"
    )
    (reward,) = built(python_reward(source))
    logged: list[tuple[str, float]] = []

    class State:
        global_step, max_steps, epoch, num_train_epochs, logging_steps, save_steps = 3, 10, 0.3, 1, 1, 500

    result = reward(
        prompts=["p", "pp"],
        completions=["a", "b"],
        completion_ids=[[1, 2], [3]],
        trainer_state=State(),
        answers=["xyz", ""],
        log_metric=lambda name, value: logged.append((name, value)),
        log_extra=None,
    )
    assert result == [6.0, 3.0]
    assert logged == [("spy/seen", 2.0)]


def test_on_error_zero_scores_zero_and_counts_the_errors(built: Any) -> None:
    source = "def flaky(completions, **kwargs):\n    raise RuntimeError('grader down')\n"
    (reward,) = built(python_reward(source, on_error="zero"))
    logged: list[tuple[str, float]] = []
    log = lambda name, value: logged.append((name, value))  # noqa: E731
    assert call(reward, ["a", "b", "c"], log_metric=log) == [0.0, 0.0, 0.0]
    assert logged == [("rewards/flaky/errors", 3.0)]


def test_source_that_fails_on_import_names_the_reward(tmp_path: Path) -> None:
    source = "import no_such_module_here\n\ndef r(completions, **kwargs):\n    return [0.0]\n"
    specs = JobSpec.model_validate(job_spec("m", reward_funcs=[python_reward(source)])).reward_funcs
    with pytest.raises(RewardFunctionError, match=r"ModuleNotFoundError: No module named 'no_such_module_here' "):
        build_reward_funcs(specs, tmp_path / "scratch", SandboxLimits(30, 1024))


# --- Python rewards: the sandbox ---


def sandbox_error(built: Any, body: str, **limits: Any) -> str:
    (reward,) = built(python_reward(f"def attempt(completions, **kwargs):\n{body}"), **limits)
    with pytest.raises(RewardFunctionError) as caught:
        call(reward, ["a"])
    return str(caught.value)


def test_the_sandbox_has_no_network(built: Any) -> None:
    body = "    import socket\n    socket.create_connection(('127.0.0.1', 5432))\n"
    assert "no network access" in sandbox_error(built, body)
    body = "    import urllib.request\n    urllib.request.urlopen('http://127.0.0.1:6379')\n"
    assert "no network access" in sandbox_error(built, body)


def test_the_sandbox_does_not_see_the_services_environment(built: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPO_DATABASE_URL", "postgresql://secret@db/grpo")
    source = (
        "import os\n\ndef env(completions, **kwargs):\n"
        "    return [float(len(os.environ.get('GRPO_DATABASE_URL', '')))]\n"
    )
    (reward,) = built(python_reward(source))
    assert call(reward, ["a"]) == [0.0]
    source = (
        "import os\n\ndef names(completions, **kwargs):\n    return [float(any('GRPO' in k for k in os.environ))]\n"
    )
    (reward,) = built(python_reward(source))
    assert call(reward, ["a"]) == [0.0]


def test_the_sandbox_reads_and_writes_only_its_scratch_dir(built: Any, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    assert f"may not read {secret}" in sandbox_error(built, f"    open({str(secret)!r}).read()\n")
    assert "may not read /etc/passwd" in sandbox_error(built, "    open('/etc/passwd').read()\n")
    assert "may not write" in sandbox_error(built, f"    open({str(tmp_path / 'out.txt')!r}, 'w')\n")
    source = (
        "def scratch(completions, **kwargs):\n"
        "    with open('notes.txt', 'w') as f:\n        f.write('ok')\n"
        "    return [float(len(open('notes.txt').read()))]\n"
    )
    (reward,) = built(python_reward(source))
    assert call(reward, ["a"]) == [2.0]


def test_the_sandbox_starts_no_processes(built: Any) -> None:
    assert "may not start or signal processes" in sandbox_error(
        built, "    import subprocess\n    subprocess.run(['ls'])\n"
    )
    assert "may not start or signal processes" in sandbox_error(built, "    import os\n    os.system('ls')\n")
    assert "may not load native code" in sandbox_error(built, "    import ctypes\n    ctypes.CDLL(None)\n")


def test_a_reward_that_loops_forever_is_stopped_and_the_next_call_works(built: Any) -> None:
    source = (
        "def sometimes_loops(completions, **kwargs):\n"
        "    while completions[0] == 'loop':\n        pass\n"
        "    return [1.0 for c in completions]\n"
    )
    (reward,) = built(python_reward(source), timeout=1)
    with pytest.raises(RewardFunctionError, match=r"'sometimes_loops' did not return within 1 s"):
        call(reward, ["loop"])
    assert call(reward, ["fine"]) == [1.0]  # a fresh sandbox took the killed one's place


def test_a_reward_that_allocates_4gb_runs_out_of_memory_clearly(built: Any) -> None:
    message = sandbox_error(built, "    block = bytearray(4 * 2**30)\n    return [0.0]\n", memory_mb=512)
    assert "raised MemoryError: out of memory (the sandbox allows 512 MiB)" in message


# --- reward models ---


def test_model_rewards_pass_through_to_trl(built: Any, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert built({"type": "model", "model": str(tmp_path)}) == [str(tmp_path)]
    assert built({"type": "model", "model": "org/reward"}) == ["org/reward"]  # a hub id: TRL loads it
    with pytest.raises(ModelNotFound, match=r"reward_funcs\[0\].model '/no/such/model' does not exist"):
        built({"type": "model", "model": "/no/such/model"})
