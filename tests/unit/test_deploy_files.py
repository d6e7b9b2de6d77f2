"""docker-compose.yml and Dockerfile.gpu, checked statically (no Docker engine runs here): every command is a real
`grpo` verb with real options, every variable a real setting, the GPU reservation is there, and the image pins
the versions the tests run."""

from __future__ import annotations

import re
import string
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from cli.main import app
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text()
OUR_IMAGE = "grpo-service:latest"


def our_services() -> list[str]:
    return [
        name for name, service in SERVICES.items() if service.get("image") == OUR_IMAGE and "entrypoint" not in service
    ]


def test_compose_has_the_services_of_the_design() -> None:
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(SERVICES)
    assert SERVICES["migrate"]["build"]["dockerfile"] == "Dockerfile.gpu"


@pytest.mark.parametrize("service", our_services())
def test_every_command_is_a_real_grpo_verb_with_real_options(service: str) -> None:
    verbs = get_command(app).commands  # type: ignore[attr-defined]
    verb, *arguments = SERVICES[service]["command"]
    assert verb in verbs, f"{service}: `grpo {verb}` does not exist"
    # Parsing raises on an unknown option or a bad value, as `grpo` would at start-up.
    verbs[verb].make_context(verb, list(arguments))


def test_option_parsing_catches_a_wrong_option() -> None:
    verbs = get_command(app).commands  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="No such option: --hots"):
        verbs["serve"].make_context("serve", ["--hots", "0.0.0.0"])


def _settings_variables(environment: dict[str, Any]) -> set[str]:
    return {name for name in environment if name.startswith("GRPO_")}


@pytest.mark.parametrize("service", our_services())
def test_every_grpo_variable_is_a_real_setting(service: str) -> None:
    known = {f"GRPO_{name.upper()}" for name in Settings.model_fields}
    assert _settings_variables(SERVICES[service]["environment"]) <= known
    Settings(
        **{
            k.removeprefix("GRPO_").lower(): v
            for k, v in SERVICES[service]["environment"].items()
            if k.startswith("GRPO_")
        }
    )


def test_services_share_the_database_broker_and_data_dir() -> None:
    environments = [SERVICES[name]["environment"] for name in ("migrate", "api", "worker")]
    for key in ("GRPO_DATABASE_URL", "GRPO_BROKER_URL", "GRPO_DATA_DIR"):
        assert len({env[key] for env in environments}) == 1, key
    assert environments[0]["GRPO_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environments[0]["GRPO_BROKER_URL"].startswith("redis://redis:")
    assert {v for v in SERVICES["api"]["volumes"]} == {v for v in SERVICES["worker"]["volumes"]} == {"data:/data"}


def test_the_worker_reserves_a_gpu_and_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1
    # `--scale worker=N` needs no fixed name and no fixed host port.
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["GRPO_DEVICE"] == "cuda"


def test_start_order_migrates_before_api_and_workers() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("postgres", "redis"):
        assert "healthcheck" in SERVICES[name]


def test_the_vllm_service_is_a_valid_trl_vllm_serve_command() -> None:
    from trl.scripts.vllm_serve import make_parser

    vllm = SERVICES["vllm"]
    assert vllm["entrypoint"] == ["trl", "vllm-serve"]
    arguments = [string.Template(a.replace(":-", "_DEFAULT_")).safe_substitute() for a in vllm["command"]]
    arguments = [re.sub(r"\$\{\w+_DEFAULT_(.*)\}", r"\1", a) for a in arguments]
    (parsed,) = make_parser().parse_args_and_config(arguments)
    assert parsed.model == "Qwen/Qwen2-0.5B-Instruct" and parsed.port == 8000


def _pyproject_pin(package: str) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{package}==([^"]+)"', text)
    assert match, f"pyproject.toml does not pin {package}"
    return match.group(1)


def test_the_image_is_cuda_based_and_pins_what_the_tests_run() -> None:
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", DOCKERFILE, re.MULTILINE)
    assert f'"torch=={_pyproject_pin("torch")}"' in DOCKERFILE
    assert 'pip install ".[train]"' in DOCKERFILE  # trl, transformers, datasets, accelerate, peft at the pins
    for package in ("torch", "trl", "transformers", "datasets", "accelerate", "peft"):
        assert _pyproject_pin(package) == version(package).split("+")[0], package
    vllm_pin = re.search(r'"vllm==([\d.]+)"', DOCKERFILE)
    assert vllm_pin, "Dockerfile.gpu must pin vllm"
    # TRL's own `vllm` extra says which vLLM releases it supports.
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    (trl_vllm,) = [Requirement(r) for r in requires("trl") or [] if r.startswith("vllm") and "extra" in r]
    assert Version(vllm_pin.group(1)) in trl_vllm.specifier


def test_the_image_runs_as_a_non_root_user_with_grpo_as_entrypoint() -> None:
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.MULTILINE)
    assert 'ENTRYPOINT ["grpo"]' in DOCKERFILE
    for package_dir in ("api", "worker", "shared", "sandbox", "cli", "migrations"):
        assert f"COPY {package_dir} ./{package_dir}" in DOCKERFILE


def test_the_image_has_what_the_reward_sandbox_confines_with() -> None:
    # pyseccomp loads the system's libseccomp; without it the sandbox would run without its seccomp filter.
    apt_install = re.search(r"apt-get install[^&]*", DOCKERFILE)
    assert apt_install and "libseccomp2" in apt_install.group(0)
    assert "pyseccomp" in (ROOT / "pyproject.toml").read_text()


def test_flower_is_an_optional_profile_on_the_services_broker() -> None:
    flower = SERVICES["flower"]
    assert flower["profiles"] == ["flower"]  # not started by a plain `docker compose up`
    broker = SERVICES["worker"]["environment"]["GRPO_BROKER_URL"]
    assert f"--broker={broker}" in flower["command"] and "flower" in flower["command"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "GRPO_CELERY_TASK_EVENTS" in {f"GRPO_{name.upper()}" for name in Settings.model_fields}


def test_a_multi_gpu_worker_profile_reserves_several_gpus_and_runs_the_same_worker() -> None:
    big, one = SERVICES["worker-multi-gpu"], SERVICES["worker"]
    assert big["profiles"] == ["multi-gpu"] and big["command"] == one["command"] == ["worker"]
    (device,) = big["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == "${GRPO_WORKER_GPUS:-4}"
    assert big["environment"] == one["environment"] and big["volumes"] == one["volumes"]
    assert "container_name" not in big and "ports" not in big  # it scales like the one-GPU worker


def test_the_image_has_deepspeed_for_the_zero_presets() -> None:
    import typing

    from shared.spec.resources import DistributedPreset

    assert re.search(r'pip install --no-build-isolation "deepspeed==[\d.]+"', DOCKERFILE)
    assert {"zero2", "zero3"} <= set(typing.get_args(DistributedPreset))
