"""POST /v1/rewards/preview over real HTTP to a real `grpo serve` (no worker): the seed's rewards score as the seed
says, failures come back per reward, and the server itself is never at risk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.processes import Service, base_env
from tests.specs import SEED_EXAMPLE, python_reward

THOUGHT = "<think>Two plus two makes four, surely.</think><answer>4</answer>"
THIN = "<think>hm</think> <answer>4</answer>"


def preview(service: Service, **body: Any) -> dict[str, Any]:
    response = service.http.post("/v1/rewards/preview", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_the_seeds_rewards_score_as_the_seed_says(api_only: Service) -> None:
    completions = [THOUGHT, THIN, "the answer is 5", "a" * 20]
    result = preview(
        api_only,
        reward_funcs=SEED_EXAMPLE["reward_funcs"],
        completions=completions,
        prompts=["What is 2+2?"] * 4,
        columns={"answers": ["4", "4", "4", "4"]},
        reward_weights=[0.1, 1.0, 2.0],
    )
    scores = {r["name"]: r["scores"] for r in result["results"]}
    assert scores == {
        "reward_len": [-float(abs(20 - len(c))) for c in completions],
        "format_reward": [1.0, 0.5, 0.0, 0.0],
        "problem_reward": [1.0, 1.0, 0.0, 0.0],
    }
    assert all(r["error"] is None for r in result["results"])
    expected_total = [0.1 * a + b + 2 * c for a, b, c in zip(*scores.values(), strict=True)]
    assert result["total"] == pytest.approx(expected_total)
    # The API's sandbox is confined by the kernel too, and says how.
    assert "Landlock ABI" in result["sandbox"] and "seccomp" in result["sandbox"]
    assert "not available here" not in result["sandbox"]


def test_every_builtin_previews_with_its_params(api_only: Service) -> None:
    result = preview(
        api_only,
        reward_funcs=[
            {"type": "builtin", "name": "length", "params": {"ideal_length": 4}},
            {"type": "builtin", "name": "format"},
            {"type": "builtin", "name": "regex", "params": {"pattern": r"\d", "match_score": 3}},
            {"type": "builtin", "name": "accuracy", "params": {"column": "solution"}},
            {"type": "builtin", "name": "exact_match", "params": {"column": "solution"}},
            {"type": "builtin", "name": "json_valid", "params": {"schema": {"type": "number"}}},
        ],
        completions=["1/2", "$\\frac{1}{2}$", '"half"'],
        columns={"solution": ["0.5", "0.5", "0.5"]},
    )
    assert [r["scores"] for r in result["results"]] == [
        [-1.0, -9.0, -2.0],
        [0.0, 0.0, 0.0],
        [3.0, 3.0, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
    ]


def test_failures_come_back_per_reward_with_what_was_printed(api_only: Service) -> None:
    result = preview(
        api_only,
        reward_funcs=[
            python_reward(
                "def chatty(completions, **kwargs):\n    print('seen', len(completions))\n    return [1, 2]\n"
            ),
            python_reward("def boom(completions, **kwargs):\n    return [1 / 0 for c in completions]\n"),
            python_reward("def short(completions, **kwargs):\n    return [1.0]\n"),
            python_reward("import socket\n\ndef net(completions, **kwargs):\n    socket.socket()\n"),
            {"type": "model", "model": "org/some-reward-model"},
        ],
        completions=["a", "b"],
    )
    chatty, boom, short, net, model = result["results"]
    assert chatty["scores"] == [1.0, 2.0] and chatty["error"] is None
    assert "seen 2" in result["output"]
    assert boom["error"] == (
        "reward function 'boom' raised ZeroDivisionError: division by zero "
        "(reward_funcs[1] line 2: return [1 / 0 for c in completions])"
    )
    assert "ZeroDivisionError" in boom["traceback"]
    assert (
        short["error"] == "reward function 'short' returned 1 value(s) for 2 completion(s): return one per completion"
    )
    assert "no network access" in net["error"]
    assert model["name"] == "some-reward-model" and "reward models are not previewed" in model["error"]
    assert result["total"] is None


def test_bad_requests_are_422s_naming_the_field(api_only: Service) -> None:
    cases = [
        ({"completions": ["a"], "prompts": ["p", "q"]}, "prompts", "prompts has 2 entries for 1 completions"),
        ({"completions": ["a"], "columns": {"answers": []}}, "columns.answers", "columns.answers has 0 entries"),
        ({"completions": ["a"], "reward_weights": [1, 2]}, "reward_weights", "2 weights for 1 reward functions"),
        ({"completions": []}, "completions", "at least 1 item"),
    ]
    length = [{"type": "builtin", "name": "length"}]
    for body, field, message in cases:
        response = api_only.http.post("/v1/rewards/preview", json={"reward_funcs": length, **body})
        assert response.status_code == 422, response.text
        errors = {e["field"]: e["message"] for e in response.json()["error"]["errors"]}
        assert message in errors[field], errors
    syntax = api_only.http.post(
        "/v1/rewards/preview", json={"reward_funcs": [python_reward("def f(:\n")], "completions": ["a"]}
    )
    assert syntax.status_code == 422 and "reward_funcs[0].source" in syntax.text


def test_a_reward_that_hangs_is_cut_at_the_preview_limit_and_the_server_carries_on(tmp_path: Path) -> None:
    service = Service(base_env(tmp_path / "data", preview_timeout_seconds="1"), tmp_path)
    try:
        service.start_api("serve")
        result = preview(
            service,
            reward_funcs=[
                python_reward("def spin(completions, **kwargs):\n    while True:\n        pass\n"),
                {"type": "builtin", "name": "length", "params": {"ideal_length": 1}},
            ],
            completions=["a"],
        )
        spin, length = result["results"]
        assert spin["error"] == (
            "reward function 'spin' did not return within 1 s (the sandbox's limit per call, "
            "GRPO_PREVIEW_TIMEOUT_SECONDS)"
        )
        assert length["scores"] == [0.0]  # the next reward got a fresh sandbox
        assert service.http.get("/healthz").status_code == 200
    finally:
        service.stop()
