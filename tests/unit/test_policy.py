"""The operator's spec policy: remote code, credentials, the Hub and local paths, each refusal naming its setting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.settings import Settings
from shared.spec.job import parse_spec
from shared.spec.policy import DATASET_FILE_SUFFIXES, SpecPolicy, credential_args
from shared.spec.problems import SpecError
from tests.specs import job_spec


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """tmp_path with its symlinks resolved (so that messages compare with what realpath says)."""
    return Path(os.path.realpath(tmp_path))


def policy_of(monkeypatch: pytest.MonkeyPatch, tmp: Path, **settings: str) -> SpecPolicy:
    """The policy of a service whose environment sets these GRPO_ settings (and a data dir in tmp)."""
    for name in list(os.environ):
        if name.startswith("GRPO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GRPO_DATA_DIR", str(tmp / "data"))
    for name, value in settings.items():
        monkeypatch.setenv(f"GRPO_{name.upper()}", value)
    return SpecPolicy.from_settings(Settings())


@pytest.fixture
def confined(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> SpecPolicy:
    """`grpo serve`'s default: no remote code, the Hub on, local paths under <data dir>/models and /datasets."""
    (tmp / "data" / "models").mkdir(parents=True)
    (tmp / "data" / "datasets").mkdir(parents=True)
    return policy_of(monkeypatch, tmp)


def refusals(spec: dict[str, Any], policy: SpecPolicy) -> dict[str, str]:
    """{field: message} of every problem the spec has under the policy (fails when it has none)."""
    with pytest.raises(SpecError) as raised:
        parse_spec(spec, policy=policy)
    return {problem.field: problem.message for problem in raised.value.problems}


def with_args(model: str = "org/model", **args: Any) -> dict[str, Any]:
    spec = job_spec(model)
    spec["args"].update(args)
    return spec


# --- Remote code ------------------------------------------------------------------------------------------------


def test_trust_remote_code_in_args_is_refused_naming_grpo_allow_remote_code(confined: SpecPolicy) -> None:
    said = refusals(with_args(trust_remote_code=True), confined)
    assert said == {
        "args.trust_remote_code": "args.trust_remote_code: running a model's own Python code is off on this service "
        "(GRPO_ALLOW_REMOTE_CODE=true allows it)"
    }


def test_trust_remote_code_in_model_init_kwargs_is_refused_as_an_object_or_a_json_string(confined: SpecPolicy) -> None:
    field = "args.model_init_kwargs.trust_remote_code"
    for kwargs in ({"trust_remote_code": True}, '{"trust_remote_code": true}', {"trust_remote_code": "false"}):
        said = refusals(with_args(model_init_kwargs=kwargs), confined)
        assert list(said) == [field], kwargs
        assert said[field].startswith(f"{field}: running a model's own Python code is off")
        assert "GRPO_ALLOW_REMOTE_CODE=true allows it" in said[field]


def test_trust_remote_code_in_peft_config_is_refused_too(confined: SpecPolicy) -> None:
    spec = job_spec("org/model", peft_config={"r": 8, "trust_remote_code": True})
    assert "GRPO_ALLOW_REMOTE_CODE=true" in refusals(spec, confined)["peft_config.trust_remote_code"]


def test_trust_remote_code_set_false_is_no_remote_code(confined: SpecPolicy) -> None:
    parse_spec(with_args(trust_remote_code=False, model_init_kwargs={"trust_remote_code": False}), policy=confined)


def test_grpo_allow_remote_code_true_allows_trust_remote_code(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    allowing = policy_of(monkeypatch, tmp, allow_remote_code="true")
    parse_spec(with_args(trust_remote_code=True, model_init_kwargs={"trust_remote_code": True}), policy=allowing)


def test_the_default_policy_without_an_operator_refuses_remote_code_too() -> None:
    with pytest.raises(SpecError, match="GRPO_ALLOW_REMOTE_CODE"):
        parse_spec(with_args(trust_remote_code=True))


# --- Credentials ------------------------------------------------------------------------------------------------


def test_a_hub_token_in_args_is_refused_whatever_the_settings(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    liberal = policy_of(monkeypatch, tmp, allow_remote_code="true", paths="anywhere")
    said = refusals(with_args(hub_token="hf_secret"), liberal)
    assert said == {
        "args.hub_token": "args.hub_token: credentials may not be sent in a spec (it is stored with the job and "
        "shown to whoever can read it): remove it, store the credential as a secret of the project (POST /v1/secrets, "
        'or `grpo secrets set HF_TOKEN`) and name it in the spec\'s `secrets` list ("secrets": ["HF_TOKEN"]): the '
        "training process gets it as an environment variable"
    }


def test_a_token_for_from_pretrained_in_model_init_kwargs_is_refused(confined: SpecPolicy) -> None:
    said = refusals(with_args(model_init_kwargs={"token": "hf_secret", "use_auth_token": "hf_secret"}), confined)
    assert set(said) == {"args.model_init_kwargs.token", "args.model_init_kwargs.use_auth_token"}
    assert all("credentials may not be sent in a spec" in message for message in said.values())


def test_the_credential_fields_are_read_from_grpoconfigs_description() -> None:
    assert credential_args() == ["hub_token"]  # TRL 1.16's only one; a new one is refused without a change here


# --- The Hub ----------------------------------------------------------------------------------------------------


def test_with_grpo_hub_off_hub_ids_are_refused_naming_grpo_hub(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    offline = policy_of(monkeypatch, tmp, hub="off", paths="anywhere")
    spec = job_spec(
        "Qwen/Qwen2-0.5B-Instruct",
        train_dataset={"hub": "openai/gsm8k", "name": "main"},
        eval_dataset={"path": "openai/gsm8k"},
        reward_funcs=[{"type": "model", "model": "org/reward-model"}],
    )
    spec["args"].update(push_to_hub=True)
    said = refusals(spec, offline)
    assert set(said) == {
        "model",
        "train_dataset.hub",
        "eval_dataset.path",
        "reward_funcs[0].model",
        "args.push_to_hub",
    }
    assert said["model"] == (
        "model 'Qwen/Qwen2-0.5B-Instruct' is a hub id, and the Hugging Face Hub is off on this service (GRPO_HUB=on "
        "allows it): give the path of a saved model on the workers"
    )
    assert all("GRPO_HUB=on allows it" in message for message in said.values())


def test_with_grpo_hub_on_hub_ids_pass(confined: SpecPolicy) -> None:
    spec = job_spec(
        "Qwen/Qwen2-0.5B-Instruct",
        train_dataset={"hub": "openai/gsm8k", "name": "main"},
        reward_funcs=[{"type": "model", "model": "org/reward-model"}],
    )
    parse_spec(spec, policy=confined)


def test_grpo_hub_takes_on_or_off(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    assert policy_of(monkeypatch, tmp, hub="off").hub is False
    assert policy_of(monkeypatch, tmp, hub="on").hub is True
    with pytest.raises(ValidationError):
        policy_of(monkeypatch, tmp, hub="maybe")


# --- Local paths ------------------------------------------------------------------------------------------------


def test_a_model_inside_a_root_passes(confined: SpecPolicy, tmp: Path) -> None:
    parse_spec(job_spec(tmp / "data" / "models" / "tiny"), policy=confined)
    parse_spec(
        job_spec("org/model", train_dataset={"path": str(tmp / "data" / "datasets" / "q.jsonl")}), policy=confined
    )


def test_a_model_outside_the_roots_is_refused_naming_grpo_model_roots(confined: SpecPolicy, tmp: Path) -> None:
    outside = tmp / "elsewhere" / "tiny"
    said = refusals(job_spec(outside, reward_funcs=[{"type": "model", "model": str(outside)}]), confined)
    roots = str(tmp / "data" / "models")
    assert said["model"] == (
        f"model {str(outside)!r} is outside GRPO_MODEL_ROOTS ({roots}): put it in one of those folders, or have "
        "the operator add its folder to GRPO_MODEL_ROOTS"
    )
    assert "GRPO_MODEL_ROOTS" in said["reward_funcs[0].model"]


def test_a_dataset_outside_the_roots_is_refused_naming_grpo_dataset_roots(confined: SpecPolicy, tmp: Path) -> None:
    spec = job_spec(
        "org/model",
        train_dataset={"path": str(tmp / "q.jsonl")},
        eval_dataset={"path": "relative/eval.csv"},  # a data file's name is a path even where it does not exist
    )
    said = refusals(spec, confined)
    assert set(said) == {"train_dataset.path", "eval_dataset.path"}
    assert all("GRPO_DATASET_ROOTS" in message for message in said.values())


def test_a_path_with_dotdot_is_refused_even_where_it_resolves_inside_a_root(confined: SpecPolicy, tmp: Path) -> None:
    sneaky = f"{tmp}/data/models/../models/tiny"
    said = refusals(job_spec(sneaky, train_dataset={"path": f"{tmp}/data/datasets/../../q.jsonl"}), confined)
    assert said["model"].startswith(f"model {sneaky!r} has a '..' component, refused where local paths must lie ")
    assert "GRPO_MODEL_ROOTS" in said["model"]
    assert "'..'" in said["train_dataset.path"] and "GRPO_DATASET_ROOTS" in said["train_dataset.path"]


def test_a_symlink_inside_a_root_that_points_out_of_it_is_refused(confined: SpecPolicy, tmp: Path) -> None:
    target = tmp / "outside" / "model"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    link = tmp / "data" / "models" / "linked"
    link.symlink_to(target, target_is_directory=True)
    said = refusals(job_spec(link), confined)
    assert f"(it resolves to {str(target)!r})" in said["model"] and "GRPO_MODEL_ROOTS" in said["model"]
    data_link = tmp / "data" / "datasets" / "q.jsonl"
    data_link.symlink_to(tmp / "outside" / "q.jsonl")
    assert (
        "GRPO_DATASET_ROOTS"
        in refusals(job_spec("org/model", train_dataset={"path": str(data_link)}), confined)["train_dataset.path"]
    )


def test_a_root_that_is_a_symlink_holds_what_lies_in_its_target(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    (tmp / "disk" / "models").mkdir(parents=True)
    (tmp / "models-link").symlink_to(tmp / "disk" / "models", target_is_directory=True)
    linked_root = policy_of(monkeypatch, tmp, model_roots=str(tmp / "models-link"))
    parse_spec(job_spec(tmp / "disk" / "models" / "tiny"), policy=linked_root)
    parse_spec(job_spec(tmp / "models-link" / "tiny"), policy=linked_root)


def test_grpo_paths_anywhere_allows_paths_outside_any_root(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    anywhere = policy_of(monkeypatch, tmp, paths="anywhere")
    parse_spec(job_spec(tmp / "elsewhere" / "tiny", train_dataset={"path": str(tmp / "q.jsonl")}), policy=anywhere)
    parse_spec(job_spec("/models/../models/tiny"), policy=anywhere)  # nothing to escape from


def test_the_roots_are_lists_separated_by_pathsep_or_commas(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    policy = policy_of(monkeypatch, tmp, model_roots=f"{tmp}/a{os.pathsep}{tmp}/b, {tmp}/c", dataset_roots=" ")
    assert policy.model_roots == (f"{tmp}/a", f"{tmp}/b", f"{tmp}/c")
    assert policy.dataset_roots == (f"{tmp}/data/datasets",)  # blank is unset: the default


def test_grpo_paths_anywhere_with_roots_is_a_settings_error(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> None:
    with pytest.raises(ValidationError, match="GRPO_PATHS=anywhere"):
        policy_of(monkeypatch, tmp, paths="anywhere", model_roots=str(tmp))


def test_dataset_file_suffixes_are_the_ones_the_worker_reads() -> None:
    from worker.data import FILE_BUILDERS

    assert set(DATASET_FILE_SUFFIXES) == set(FILE_BUILDERS)


# --- Loading arguments that name paths of their own ----------------------------------------------------------


def test_loading_arguments_that_name_their_own_paths_are_refused_where_paths_are_confined(
    confined: SpecPolicy, monkeypatch: pytest.MonkeyPatch, tmp: Path
) -> None:
    # An absolute `subfolder` replaces the model's folder in from_pretrained (os.path.join): the allowed model
    # would be a decoy for weights anywhere on the worker.
    model = str(tmp / "data" / "models")
    for name, value in (("subfolder", "/srv/other-model"), ("gguf_file", "/abs/x.gguf"), ("cache_dir", "/tmp/c")):
        said = refusals(with_args(model, model_init_kwargs={name: value}), confined)
        assert list(said) == [f"args.model_init_kwargs.{name}"], name
        assert "GRPO_MODEL_ROOTS" in said[f"args.model_init_kwargs.{name}"]
    said = refusals(with_args(model, accelerator_config="/etc/some.json"), confined)
    assert list(said) == ["args.accelerator_config"]
    # Where paths may be anywhere (grpo up), they are the user's own files.
    anywhere = policy_of(monkeypatch, tmp, paths="anywhere")
    parse_spec(with_args(model, model_init_kwargs={"subfolder": "sub"}), policy=anywhere)
