"""The `GRPOConfig` a job trains with: the spec's `args`, with the service's output dir, checkpoint default and
precision (and the same precision choice as `accelerate launch` takes it, for a multi-process job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig

from shared.settings import Settings
from shared.spec.job import JobSpec
from worker.failures import TrainingFailed
from worker.vllm_server import trainer_arguments


def choose_precision(args: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """bf16 where the GPU supports it, fp32 on a CPU, unless the spec chose; refuse bf16/fp16 without a GPU."""
    has_cuda = settings.device != "cpu" and torch.cuda.is_available()
    if settings.device == "cuda" and not has_cuda:
        raise TrainingFailed("GRPO_DEVICE is cuda but this worker sees no CUDA GPU: check the GPU reservation")
    if has_cuda:
        if "bf16" not in args and "fp16" not in args:
            return {"bf16": torch.cuda.is_bf16_supported()}
        return {}
    for name in ("bf16", "fp16"):
        if args.get(name):
            raise TrainingFailed(
                f"args.{name}=true needs a GPU, and this worker has only a CPU: remove args.{name} "
                "(the service picks bf16 on GPUs that support it and fp32 on CPUs)"
            )
    # TRL defaults bf16 to True, which transformers refuses on a CPU.
    return {"bf16": False, "fp16": False, "use_cpu": True}


def build_config(spec: JobSpec, settings: Settings, output_dir: Path) -> GRPOConfig:
    """GRPOConfig from the spec's args, with the service's output dir, checkpoint default and precision."""
    arguments: dict[str, Any] = {"report_to": "none", "disable_tqdm": True, **spec.args}
    if settings.default_save_steps and "save_steps" not in spec.args and "save_strategy" not in spec.args:
        arguments["save_steps"] = settings.default_save_steps
    arguments.update(choose_precision(spec.args, settings))
    arguments.update(trainer_arguments(spec.args, settings.vllm_server_url))
    arguments["output_dir"] = str(output_dir)
    return GRPOConfig(**arguments)


def accelerate_mixed_precision(args: dict[str, Any], settings: Settings) -> str:
    """`accelerate launch`'s --mixed_precision for the job's own choice in `args`, or else the service's."""
    precision = choose_precision(args, settings)
    chosen: dict[str, Any] = {**precision, **{k: args[k] for k in ("bf16", "fp16") if k in args}}
    return "bf16" if chosen.get("bf16") else "fp16" if chosen.get("fp16") else "no"
