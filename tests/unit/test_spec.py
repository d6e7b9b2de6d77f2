"""Job spec validation: every rule, with a good and a bad case, and the messages a user reads."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.spec.job import JobSpec, parse_spec
from shared.spec.problems import SpecError
from tests.specs import job_spec, python_reward, seed_example


def problems_of(spec: dict[str, Any], device: str = "auto") -> dict[str, str]:
    """{field: message} of every problem parse_spec finds (fails when it finds none)."""
    with pytest.raises(SpecError) as caught:
        parse_spec(spec, device=device)
    return {p.field: p.message for p in caught.value.problems}


def with_args(**args: Any) -> dict[str, Any]:
    spec = job_spec("m")
    spec["args"].update(args)
    return spec


def test_the_seed_example_is_accepted_as_it_is() -> None:
    spec = parse_spec(seed_example("some/model"))
    assert [r.reward_name for r in spec.reward_funcs] == ["reward_len", "format_reward", "problem_reward"]
    assert spec.args["gradient_accumulation_steps"] == 2


def test_a_minimal_spec_takes_trl_defaults_for_args() -> None:
    spec = {
        "model": "m",
        "train_dataset": {"rows": [{"prompt": "p"}]},
        "reward_funcs": [{"type": "builtin", "name": "length"}],
    }
    parsed = parse_spec(spec)
    assert parsed.args == {}
    assert parsed.reward_funcs[0].params.ideal_length == 20  # type: ignore[union-attr]


def test_unknown_arg_gets_a_did_you_mean() -> None:
    # The seed itself misspells the field as `num_generation`.
    problems = problems_of(with_args(num_generation=4))
    assert "did you mean 'num_generations'?" in problems["args.num_generation"]


def test_batch_not_divisible_by_num_generations_names_fields_and_fixes() -> None:
    message = problems_of(with_args(per_device_train_batch_size=3, num_generations=4))[
        "args.per_device_train_batch_size"
    ]
    assert "(3) must be divisible by args.num_generations (4)" in message
    assert "use per_device_train_batch_size 4 or 8, or num_generations 3" in message


def test_generation_batch_counts_gradient_accumulation() -> None:
    # 2 x 2 = 4 completions per generation batch: whole groups of 4.
    parse_spec(with_args(per_device_train_batch_size=2, gradient_accumulation_steps=2, num_generations=4))
    message = problems_of(with_args(per_device_train_batch_size=3, gradient_accumulation_steps=2, num_generations=4))[
        "args.per_device_train_batch_size"
    ]
    assert "3 x gradient_accumulation_steps 2 = 6" in message


def test_trl_defaults_make_a_valid_batch() -> None:
    # TRL's defaults: per_device_train_batch_size 8, num_generations 8.
    parse_spec(with_args(per_device_train_batch_size=8, num_generations=8))
    spec = job_spec("m")
    spec["args"] = {}
    parse_spec(spec)


def test_generation_batch_size_rules() -> None:
    parse_spec(with_args(generation_batch_size=8))
    assert (
        "divisible by the global batch size"
        in problems_of(with_args(generation_batch_size=6))["args.generation_batch_size"]
    )
    assert (
        "divisible by args.num_generations"
        in problems_of(with_args(per_device_train_batch_size=2, generation_batch_size=6))["args.generation_batch_size"]
    )
    assert (
        "cannot both be set"
        in problems_of(with_args(generation_batch_size=8, steps_per_generation=2))["args.generation_batch_size"]
    )


def test_steps_per_generation_must_make_whole_groups() -> None:
    parse_spec(with_args(per_device_train_batch_size=2, steps_per_generation=2))
    message = problems_of(with_args(per_device_train_batch_size=2, steps_per_generation=3))["args.steps_per_generation"]
    assert "2 x steps_per_generation 3 = 6) must be divisible by args.num_generations (4)" in message


@pytest.mark.parametrize("num_generations", [1, 0])
def test_num_generations_below_two_is_refused(num_generations: int) -> None:
    message = problems_of(with_args(num_generations=num_generations, per_device_train_batch_size=4))[
        "args.num_generations"
    ]
    assert "must be at least 2" in message


def test_enum_fields_are_checked_with_suggestions() -> None:
    assert "did you mean 'dapo'?" in problems_of(with_args(loss_type="dapoo"))["args.loss_type"]
    assert "'group', 'batch', 'none'" in problems_of(with_args(scale_rewards="groups"))["args.scale_rewards"]
    assert "which TRL does not accept" in problems_of(with_args(lr_scheduler_type="cosinus"))["args.lr_scheduler_type"]
    for good in (
        {"loss_type": "grpo"},
        {"scale_rewards": "batch"},
        {"scale_rewards": False},
        {"lr_scheduler_type": "cosine"},
        {"importance_sampling_level": "sequence"},
    ):
        parse_spec(with_args(**good))


def test_types_are_checked() -> None:
    assert problems_of(with_args(learning_rate="fast"))["args.learning_rate"] == (
        'args.learning_rate must be a number, not "fast"'
    )
    assert "must be an integer" in problems_of(with_args(max_steps=2.5))["args.max_steps"]
    assert "true or false" in problems_of(with_args(use_vllm="yes"))["args.use_vllm"]
    assert "args.reward_weights[1]" in problems_of(with_args(reward_weights=[1.0, "x"]))
    parse_spec(with_args(learning_rate=1))  # an integer is a fine float


def test_cross_field_rules_are_checked_beside_unknown_fields() -> None:
    problems = problems_of(with_args(per_device_train_batch_size=3, num_generation=4))
    assert {"args.num_generation", "args.per_device_train_batch_size"} <= set(problems)


def test_output_dir_is_managed_by_the_service() -> None:
    assert "set by the service" in problems_of(with_args(output_dir="/tmp/x"))["args.output_dir"]


def test_rules_trl_checks_only_at_run_time() -> None:
    assert "not supported by GRPO" in problems_of(with_args(auto_find_batch_size=True))["args.auto_find_batch_size"]
    assert "choose one precision" in problems_of(with_args(bf16=True, fp16=True))["args.bf16"]
    assert "log_completions" in problems_of(with_args(log_completions_hub_repo="me/x"))["args.log_completions_hub_repo"]
    assert "beta" in problems_of(with_args(sync_ref_model=True, beta=0.0))["args.sync_ref_model"]
    assert (
        "must be less than"
        in problems_of(with_args(vllm_importance_sampling_clip_min=3.0, vllm_importance_sampling_clip_max=2.0))[
            "args.vllm_importance_sampling_clip_min"
        ]
    )
    assert "greater than 0" in problems_of(with_args(temperature=0))["args.temperature"]
    assert "at least 0" in problems_of(with_args(learning_rate=-1e-5))["args.learning_rate"]


def test_reward_weights_must_match_reward_functions() -> None:
    message = problems_of(with_args(reward_weights=[1.0, 2.0]))["args.reward_weights"]
    assert "2 weight(s) but the job has 1 reward function(s)" in message
    parse_spec(with_args(reward_weights=[0.5]))


def test_eval_batch_must_hold_whole_groups_when_evaluating() -> None:
    spec = with_args(eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=3)
    spec["eval_dataset"] = {"rows": [{"prompt": "x"}]}
    assert "per_device_eval_batch_size (3)" in problems_of(spec)["args.per_device_eval_batch_size"]
    spec["args"]["per_device_eval_batch_size"] = 4
    parse_spec(spec)


def test_bf16_is_refused_at_submit_on_a_cpu_only_deployment() -> None:
    message = problems_of(with_args(bf16=True), device="cpu")["args.bf16"]
    assert "needs a GPU" in message and "remove args.bf16" in message
    parse_spec(with_args(bf16=True), device="auto")  # a GPU worker may take it


# --- reward functions -----------------------------------------------------------------------------------------


def with_rewards(*rewards: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = job_spec("m", reward_funcs=list(rewards))
    if rows is not None:
        spec["train_dataset"] = {"rows": rows}
    return spec


def test_python_reward_must_parse() -> None:
    message = problems_of(with_rewards(python_reward("def r(completions, **kw):\n  return [1.0 for c in completions")))[
        "reward_funcs[0].source"
    ]
    assert message.startswith("reward_funcs[0].source is not valid Python: line 2")


def test_python_reward_must_define_a_function() -> None:
    assert "defines no function" in problems_of(with_rewards(python_reward("x = 1")))["reward_funcs[0].source"]


def test_several_functions_need_function_named() -> None:
    source = (
        "def helper(c):\n    return 1.0\n\n"
        "def reward(completions, **kw):\n    return [helper(c) for c in completions]\n"
    )
    message = problems_of(with_rewards(python_reward(source)))["reward_funcs[0].function"]
    assert "defines 2 functions (helper, reward)" in message
    parse_spec(with_rewards(python_reward(source, function="reward")))
    assert (
        "did you mean 'reward'?"
        in problems_of(with_rewards(python_reward(source, function="rewards")))["reward_funcs[0].function"]
    )


def test_python_reward_must_take_kwargs() -> None:
    message = problems_of(with_rewards(python_reward("def r(completions):\n    return [1.0 for c in completions]")))[
        "reward_funcs[0].source"
    ]
    assert "must accept **kwargs" in message


def test_undefined_names_in_reward_source_are_reported() -> None:
    # The seed's problem_reward calls extract_final_answer, which the seed never defines.
    source = (
        "def problem_reward(completions, answers, **kwargs):\n"
        "    return [1.0 if extract_final_answer(c) == a else 0.0 for c, a in zip(completions, answers)]\n"
    )
    spec = with_rewards(python_reward(source), rows=[{"prompt": "p", "answers": "4"}])
    assert (
        "uses extract_final_answer, which the source neither defines nor imports"
        in problems_of(spec)["reward_funcs[0].source"]
    )
    parse_spec(
        with_rewards(
            python_reward("import re\n\n" + source.replace("extract_final_answer(c)", "re.sub('x', '', c)")),
            rows=[{"prompt": "p", "answers": "4"}],
        )
    )


def test_reward_parameters_must_be_dataset_columns() -> None:
    source = "def problem_reward(completions, answers, **kwargs):\n    return [0.0 for c in completions]\n"
    message = problems_of(with_rewards(python_reward(source), rows=[{"prompt": "p", "answer": "4"}]))[
        "reward_funcs[0].source"
    ]
    assert "needs the dataset column(s) answers, but train_dataset has answer, prompt" in message
    parse_spec(with_rewards(python_reward(source), rows=[{"prompt": "p", "answers": "4"}]))


def test_reward_names_must_be_unique() -> None:
    length = {"type": "builtin", "name": "length"}
    message = problems_of(with_rewards(length, length))["reward_funcs[1]"]
    assert "would collide" in message


def test_builtin_reward_names_and_params_are_checked() -> None:
    assert (
        "did you mean 'length'?"
        in problems_of(with_rewards({"type": "builtin", "name": "lenght"}))["reward_funcs[0].name"]
    )
    assert "reward_funcs[0].params.ideal" in problems_of(
        with_rewards({"type": "builtin", "name": "length", "params": {"ideal": 3}})
    )
    assert "reward_funcs[0].params.ideal_length" in problems_of(
        with_rewards({"type": "builtin", "name": "length", "params": {"ideal_length": -1}})
    )


def test_reward_type_must_be_known() -> None:
    assert (
        "use one of 'builtin', 'python', 'model'"
        in problems_of(with_rewards({"type": "pyton", "source": "x"}))["reward_funcs[0]"]
    )


def test_model_reward_is_accepted() -> None:
    spec = parse_spec(with_rewards({"type": "model", "model": "org/reward-model"}))
    assert spec.reward_funcs[0].reward_name == "reward-model"


# --- datasets and the rest ------------------------------------------------------------------------------------


def test_rows_need_a_prompt() -> None:
    spec = with_rewards({"type": "builtin", "name": "length"}, rows=[{"question": "q"}])
    message = problems_of(spec)["train_dataset.rows[0].prompt"]
    assert "needs a non-empty 'prompt'" in message and "its columns: question" in message


def test_conversational_prompts_are_accepted() -> None:
    rows = [{"prompt": [{"role": "user", "content": "hi"}]}]
    parse_spec(with_rewards({"type": "builtin", "name": "length"}, rows=rows))


def test_rows_need_the_same_columns() -> None:
    spec = with_rewards({"type": "builtin", "name": "length"}, rows=[{"prompt": "a"}, {"prompt": "b", "x": 1}])
    assert "every row needs the same columns" in problems_of(spec)["train_dataset.rows[1]"]


def test_dataset_needs_rows_or_path() -> None:
    spec = job_spec("m", train_dataset={"file": "x"})
    assert "needs `rows`" in problems_of(spec)["train_dataset"]
    parse_spec(job_spec("m", train_dataset={"path": "/data/prompts.jsonl"}))


def test_structural_problems_name_their_field() -> None:
    spec = job_spec("m")
    del spec["model"]
    spec["modle"] = "m"
    problems = problems_of(spec)
    assert problems["model"] == "model is required"
    assert "did you mean 'model'?" in problems["modle"]


def test_all_problems_are_reported_at_once() -> None:
    spec = copy.deepcopy(job_spec("m"))
    spec["args"].update(num_generations=1, loss_type="x")
    spec["reward_funcs"] = [python_reward("def r(c):\n    return c")]
    problems = problems_of(spec)
    assert {"args.loss_type", "reward_funcs[0].source"} <= set(problems)


def test_spec_round_trips_as_stored() -> None:
    spec = seed_example("m")
    parsed = JobSpec.model_validate(spec)
    assert JobSpec.model_validate(parsed.model_dump(mode="json", exclude_unset=True)) == parsed


def test_metadata_labels_are_short_strings_and_each_problem_says_the_fix() -> None:
    assert parse_spec(job_spec("m", metadata={"team": "nlp", "run:id/v1": "a b"})).metadata == {
        "team": "nlp",
        "run:id/v1": "a b",
    }
    assert problems_of(job_spec("m", metadata={"bad key": "x"})) == {
        "metadata.bad key": "metadata key 'bad key' may hold only letters, digits and _.:/- (1 to 64 characters): "
        "rename it"
    }
    assert problems_of(job_spec("m", metadata={"k": "v" * 513})) == {
        "metadata.k": "metadata.k is longer than 512 characters: shorten it"
    }
    assert problems_of(job_spec("m", metadata={"k": 3})) == {
        "metadata.k": "metadata.k is 3: labels are strings, so quote it"
    }
    assert problems_of(job_spec("m", metadata={f"k{i}": "v" for i in range(17)})) == {
        "metadata": "metadata has 17 labels: keep at most 16"
    }
