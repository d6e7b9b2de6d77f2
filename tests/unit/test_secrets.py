"""Secrets without a database: which names a secret may have (and why not), the key and where it comes from, and
encryption that opens only with the right key, as the right secret of the right project."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, MultiFernet

from shared.access.secrets import (
    KEY_SETTING,
    SecretRefused,
    SecretUnavailable,
    check_name,
    check_spec_secrets,
    decrypt,
    encrypt,
    ensure_key_file,
    name_problem,
    secret_cipher,
)
from shared.settings import Settings
from shared.spec.job import parse_spec
from shared.spec.problems import SpecError
from tests.specs import job_spec

VALUE = "hf_" + "x7Qp" * 8


def cipher_of(*keys: bytes) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


# --- Names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "WANDB_API_KEY",
        "OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "A" * 58 + "_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    ],
)
def test_credentials_named_as_environment_variables_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["CC", "CXX", "GCONV_PATH", "TRITON_CACHE_DIR", "XDG_CACHE_HOME", "_PRIVATE"])
def test_a_name_that_does_not_say_it_is_a_credential_is_refused(name: str) -> None:
    """Any other variable may name a program or a path some process runs (CXX is what torch.compile's ranks
    compile with): a value there would be the member's code outside the sandbox."""
    with pytest.raises(SecretRefused, match="a secret must be named as a credential, ending in _TOKEN"):
        check_name(name)


@pytest.mark.parametrize("name", ["hf_token", "1TOKEN", "HF-TOKEN", "HF TOKEN", "", "A" * 65, "TOKEN=1"])
def test_a_name_that_is_no_environment_variable_is_refused_saying_how_to_name_it(name: str) -> None:
    with pytest.raises(SecretRefused, match="name it as an environment variable, 1 to 64 capital letters") as refused:
        check_name(name)
    assert refused.value.reason == "invalid"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("GRPO_SECRET_KEY", "names starting with GRPO_): the service's own settings"),
        ("GRPO_DATABASE_URL", "names starting with GRPO_)"),
        ("PATH", "PATH): the service sets it for the processes it starts"),
        ("HOME", "HOME): the service sets it"),
        ("LD_PRELOAD", "names starting with LD_): it changes which native code the job's processes load"),
        ("LD_LIBRARY_PATH", "names starting with LD_)"),
        ("GLIBC_TUNABLES", "names starting with GLIBC_)"),
        ("PYTHONPATH", "names starting with PYTHON): it changes how Python starts and where it imports code from"),
        ("PYTHONSTARTUP", "names starting with PYTHON)"),
        ("CUDA_VISIBLE_DEVICES", "names starting with CUDA_): the worker sets it to place the job on its GPUs"),
        ("MASTER_PORT", "MASTER_PORT): the worker sets it"),
        ("HF_DATASETS_TRUST_REMOTE_CODE", "names starting with HF_DATASETS_): it changes where models and datasets"),
        ("HF_HUB_OFFLINE", "names starting with HF_HUB_)"),
        ("HF_ENDPOINT", "HF_ENDPOINT): it changes where models and datasets are loaded from"),
        ("HTTPS_PROXY", "HTTPS_PROXY): it changes where the job's network traffic goes"),
        ("SSL_CERT_FILE", "names starting with SSL_)"),
    ],
)
def test_a_name_that_changes_how_the_service_or_its_processes_run_is_refused_saying_why(name: str, why: str) -> None:
    problem = name_problem(name)
    assert problem is not None and f"secret name {name!r} is refused ({why}" in problem, problem
    assert problem.endswith(
        "a secret is a credential for the training process (HF_TOKEN, WANDB_API_KEY): give it another name"
    )


def test_a_specs_secrets_list_is_checked_name_by_name_and_once_each() -> None:
    problems = check_spec_secrets(["HF_TOKEN", "PATH", "hf", "HF_TOKEN"])
    assert [p.field for p in problems] == ["secrets[1]", "secrets[2]", "secrets[3]"]
    assert problems[2].message == "secrets[3]: HF_TOKEN is listed twice: list it once"


def test_a_spec_names_secrets_and_a_bad_name_is_a_spec_problem() -> None:
    spec = parse_spec(job_spec("/models/tiny", secrets=["HF_TOKEN", "WANDB_API_KEY"]))
    assert spec.secrets == ["HF_TOKEN", "WANDB_API_KEY"]
    assert parse_spec(job_spec("/models/tiny")).secrets == []
    with pytest.raises(SpecError) as refused:
        parse_spec(job_spec("/models/tiny", secrets=["LD_PRELOAD"]))
    assert [p.field for p in refused.value.problems] == ["secrets[0]"]
    assert "is refused (names starting with LD_)" in str(refused.value)


def test_a_credential_in_args_points_to_secrets() -> None:
    with pytest.raises(SpecError) as refused:
        parse_spec(job_spec("/models/tiny", args={**job_spec("/m")["args"], "hub_token": VALUE}))
    message = str(refused.value)
    assert "POST /v1/secrets" in message and '"secrets": ["HF_TOKEN"]' in message and VALUE not in message


# --- Encryption -------------------------------------------------------------------------------------------------


def test_a_secret_decrypts_to_its_value_and_its_ciphertext_does_not_hold_it() -> None:
    cipher = cipher_of(Fernet.generate_key())
    sealed = encrypt(cipher, "research", "HF_TOKEN", VALUE)
    assert VALUE not in sealed and "HF_TOKEN" not in sealed and "research" not in sealed
    assert decrypt(cipher, "research", "HF_TOKEN", sealed) == VALUE
    assert encrypt(cipher, "research", "HF_TOKEN", VALUE) != sealed  # a fresh IV each time


def test_a_wrong_key_fails_naming_the_secret_and_the_setting_never_the_value() -> None:
    sealed = encrypt(cipher_of(Fernet.generate_key()), "research", "HF_TOKEN", VALUE)
    with pytest.raises(SecretUnavailable) as failed:
        decrypt(cipher_of(Fernet.generate_key()), "research", "HF_TOKEN", sealed)
    message = str(failed.value)
    assert message.startswith(f"secret HF_TOKEN of project research does not decrypt with this service's {KEY_SETTING}")
    assert VALUE not in message and failed.value.__cause__ is None and failed.value.__suppress_context__


def test_a_ciphertext_copied_to_another_project_or_name_does_not_open_as_that_secret() -> None:
    cipher = cipher_of(Fernet.generate_key())
    sealed = encrypt(cipher, "research", "HF_TOKEN", VALUE)
    for project, name in (("other", "HF_TOKEN"), ("research", "WANDB_API_KEY")):
        with pytest.raises(SecretUnavailable, match="was not encrypted as that secret"):
            decrypt(cipher, project, name, sealed)


def test_a_rotation_lists_the_new_key_first_and_still_opens_what_the_old_one_sealed(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    sealed_before = encrypt(cipher_of(old), "research", "HF_TOKEN", VALUE)
    rotated = secret_cipher(Settings(data_dir=tmp_path, secret_key=f"{new.decode()}, {old.decode()}"))
    assert decrypt(rotated, "research", "HF_TOKEN", sealed_before) == VALUE
    sealed_after = encrypt(rotated, "research", "HF_TOKEN", VALUE)
    assert decrypt(cipher_of(new), "research", "HF_TOKEN", sealed_after) == VALUE


# --- The key ----------------------------------------------------------------------------------------------------


def test_without_a_key_secrets_are_refused_saying_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SecretRefused) as refused:
        secret_cipher(Settings(data_dir=tmp_path))
    message = str(refused.value)
    assert refused.value.reason == "unconfigured"
    assert f"it has no {KEY_SETTING} (nor a {tmp_path / 'secret-key'} file)" in message
    assert "`grpo secret-key` prints one" in message and "Fernet.generate_key().decode()" in message


def test_a_setting_that_is_no_fernet_key_is_refused_without_quoting_it(tmp_path: Path) -> None:
    with pytest.raises(SecretRefused) as refused:
        secret_cipher(Settings(data_dir=tmp_path, secret_key="not-a-key-at-all"))
    assert "GRPO_SECRET_KEY does not hold Fernet keys" in str(refused.value)
    assert "not-a-key-at-all" not in str(refused.value)


def test_grpo_ups_key_file_is_made_once_with_mode_0600_and_the_setting_wins_over_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    path = ensure_key_file(settings)
    assert path == tmp_path / "data" / "secret-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text()
    assert ensure_key_file(settings) == path and path.read_text() == key  # kept: secrets set under it still open
    sealed = encrypt(secret_cipher(settings), "default", "HF_TOKEN", VALUE)
    assert decrypt(cipher_of(key.strip().encode()), "default", "HF_TOKEN", sealed) == VALUE
    configured = Settings(data_dir=tmp_path / "other", secret_key=Fernet.generate_key().decode())
    assert ensure_key_file(configured) is None and not (tmp_path / "other" / "secret-key").exists()


def test_the_settings_never_show_the_key() -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(secret_key=key)
    assert key not in repr(settings) and key not in str(settings.model_dump())
