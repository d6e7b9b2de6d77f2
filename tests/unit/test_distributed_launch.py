"""The command lines that start a multi-process job's ranks, checked by the launchers' own parsers (so a wrong
flag fails here, not on a GPU machine), and the presets the project ships, loaded as accelerate loads them."""

from __future__ import annotations

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from torch.distributed.run import get_args_parser

from shared.spec.resources import Resources
from worker.distributed import PRESETS_DIR, launch_command

EXPECTED_TYPES = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}


@pytest.mark.parametrize("preset", sorted(EXPECTED_TYPES))
def test_each_preset_is_an_accelerate_config_of_its_kind(preset: str) -> None:
    config = load_config_from_file(str(PRESETS_DIR / f"{preset}.yaml"))
    assert config.distributed_type.value == EXPECTED_TYPES[preset]
    assert config.num_machines == 1 and not config.use_cpu
    if preset.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(preset[-1])
    if preset == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize("preset", [None, "zero3", "fsdp"])
def test_a_gpu_job_is_launched_by_accelerate_with_its_preset(preset: str | None) -> None:
    resources = Resources(gpus=4, distributed=preset)
    command = launch_command(resources, "job-1", 2, on_gpus=True, mixed_precision="bf16", port=29500)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    parsed = launch_command_parser().parse_args(command[3:])
    assert parsed.config_file.endswith(f"{preset or 'ddp'}.yaml")
    assert (parsed.num_processes, parsed.main_process_port, parsed.mixed_precision) == (4, 29500, "bf16")
    assert parsed.module and parsed.training_script == "worker.rank_main"
    assert parsed.training_script_args == ["job-1", "2"]


def test_a_cpu_job_is_launched_by_torchrun_with_one_process_per_rank() -> None:
    command = launch_command(Resources(processes=3, gpus=0), "job-1", 1, on_gpus=False, mixed_precision="no", port=4)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    parsed = get_args_parser().parse_args(command[3:])
    assert (parsed.nproc_per_node, parsed.master_addr, parsed.master_port) == ("3", "127.0.0.1", 4)
    assert (
        parsed.module and parsed.training_script == "worker.rank_main" and parsed.training_script_args == ["job-1", "1"]
    )
