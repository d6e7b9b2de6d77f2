"""The vLLM server of a job, what can be checked without starting one: the command line (through TRL's own
`trl vllm-serve` parser, so a wrong flag fails here), that the default command is TRL's, and which server each of
TRL's three vLLM ways points the trainer at."""

from __future__ import annotations

import dataclasses
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from trl.scripts.vllm_serve import ScriptArguments, make_parser

from shared.settings import Settings
from shared.spec.job import JobSpec
from tests.specs import job_spec
from worker import vllm_server
from worker.config import build_config
from worker.vllm_server import (
    SERVER_GPU_MEMORY_UTILIZATION,
    VllmServerFailed,
    resolve_command,
    serve_arguments,
    trainer_arguments,
)

SERVER = {"use_vllm": True, "vllm_mode": "server"}


def parsed(arguments: list[str]) -> ScriptArguments:
    (script_args,) = make_parser().parse_args_and_config(arguments)  # refuses any flag TRL does not know
    assert isinstance(script_args, ScriptArguments)
    return script_args


@pytest.fixture
def no_job_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server started by this process (start_for_job leaves its address in the environment for the ranks)."""
    monkeypatch.delenv(vllm_server.URL_ENV, raising=False)
    monkeypatch.delenv(vllm_server.GROUP_PORT_ENV, raising=False)


def test_the_server_command_line_is_one_trls_vllm_serve_parses_with_the_specs_vllm_settings() -> None:
    arguments = serve_arguments(
        "Qwen/Qwen2-0.5B-Instruct",
        {
            **SERVER,
            "vllm_gpu_memory_utilization": 0.5,
            "vllm_max_model_length": 1024,
            "vllm_tensor_parallel_size": 2,
            "vllm_model_impl": "transformers",
            "trust_remote_code": True,
        },
        gpus=2,
        port=8123,
    )
    served = parsed(arguments)
    assert served.model == "Qwen/Qwen2-0.5B-Instruct"
    assert (served.tensor_parallel_size, served.gpu_memory_utilization, served.max_model_len) == (2, 0.5, 1024)
    assert (served.host, served.port) == ("127.0.0.1", 8123)  # this machine only: the trainer is beside it
    assert served.vllm_model_impl == "transformers" and served.trust_remote_code is True


def test_without_vllm_settings_the_server_spans_its_gpus_with_trls_own_memory_default() -> None:
    served = parsed(serve_arguments("/models/tiny", SERVER, gpus=3, port=9000))
    assert served.tensor_parallel_size == 3  # every GPU reserved for generation
    # vllm-serve's default (the server has its GPUs to itself), not GRPOConfig's 0.3 for colocate.
    default = {field.name: field.default for field in dataclasses.fields(ScriptArguments)}["gpu_memory_utilization"]
    assert served.gpu_memory_utilization == SERVER_GPU_MEMORY_UTILIZATION == default
    assert served.max_model_len is None and served.trust_remote_code is False


def test_the_default_command_is_trls_vllm_serve_found_beside_the_workers_python() -> None:
    assert Settings().vllm_serve_command == "trl vllm-serve"
    program, *rest = resolve_command(Settings().vllm_serve_command)
    assert rest == ["vllm-serve"]
    assert Path(program) == Path(sys.executable).parent / "trl"  # this virtualenv's, on PATH or not
    # That program is TRL's command line, and `vllm-serve` is TRL's command that runs its vllm_serve script.
    (entry,) = entry_points(group="console_scripts", name="trl")
    assert entry.value == "trl.cli:main"
    assert f"from {entry.module} import main" in Path(program).read_text()
    from trl.cli.commands import VllmServeCommand

    assert VllmServeCommand().name == "vllm-serve"


def test_a_serve_command_that_is_not_installed_is_named_with_the_fix() -> None:
    with pytest.raises(VllmServerFailed, match=r"'no-such-vllm' .* is neither beside the worker's Python nor on PATH"):
        resolve_command("no-such-vllm serve")
    with pytest.raises(VllmServerFailed, match="GRPO_VLLM_SERVE_COMMAND is empty"):
        resolve_command("  ")


@pytest.mark.usefixtures("no_job_server")
def test_colocate_and_a_named_server_pass_through_and_an_operators_server_is_used_as_is() -> None:
    operator = "http://vllm:8000"
    assert trainer_arguments({"use_vllm": True}, operator) == {}  # colocate: TRL's default mode
    assert trainer_arguments({"use_vllm": True, "vllm_mode": "colocate"}, operator) == {}
    assert trainer_arguments({"vllm_mode": "server"}, operator) == {}  # no use_vllm: no vLLM at all
    assert trainer_arguments(SERVER, operator) == {"vllm_server_base_url": operator}
    assert trainer_arguments({**SERVER, "vllm_server_base_url": "http://mine:8000"}, operator) == {}
    assert trainer_arguments({**SERVER, "vllm_server_host": "10.0.0.5"}, operator) == {}
    assert trainer_arguments(SERVER, None) == {}


def test_a_server_started_for_the_job_is_what_the_trainer_and_every_rank_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vllm_server.URL_ENV, "http://127.0.0.1:41000")
    monkeypatch.setenv(vllm_server.GROUP_PORT_ENV, "41001")
    expected = {"vllm_server_base_url": "http://127.0.0.1:41000", "vllm_group_port": 41001}
    assert trainer_arguments(SERVER, "http://operator:8000") == expected
    assert trainer_arguments({"use_vllm": True}, None) == {}  # a colocate job ignores it


def config_of(args: dict[str, Any], settings: Settings, tmp_path: Path) -> Any:
    spec = JobSpec.model_validate({**job_spec("m"), "args": {**job_spec("m")["args"], **args}})
    return build_config(spec, settings, tmp_path)


@pytest.mark.usefixtures("no_job_server")
def test_grpo_config_gets_the_operators_server_in_server_mode_and_nothing_in_colocate_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, vllm_server_url="http://vllm:8000")
    config = config_of(SERVER, settings, tmp_path)
    assert (config.vllm_mode, config.vllm_server_base_url, config.vllm_group_port) == (
        "server",
        settings.vllm_server_url,
        51216,
    )
    colocated = config_of({"use_vllm": True, "vllm_mode": "colocate"}, settings, tmp_path)
    assert (colocated.vllm_mode, colocated.vllm_server_base_url) == ("colocate", None)
