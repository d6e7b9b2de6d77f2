"""Which of the worker's GPUs a job trains on and which its vLLM server gets, and showing training only its own."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.spec.job import JobSpec
from shared.spec.resources import gpu_plan

# The CUDA_VISIBLE_DEVICES the worker itself had, kept before the child narrows it to training's GPUs.
WORKER_DEVICES_ENV = "GRPO_WORKER_CUDA_VISIBLE_DEVICES"


@dataclass
class GpuPlan:
    """The CUDA devices (as CUDA_VISIBLE_DEVICES names them) a job trains on, and those its vLLM server gets."""

    training: list[str]
    vllm: list[str]


def assign_gpus(spec: JobSpec, worker_gpus: int) -> GpuPlan:
    """Split the worker's GPUs between training and vLLM, and show training only its own (before CUDA starts).

    The plan's indices count the GPUs the worker sees: a worker started with CUDA_VISIBLE_DEVICES=4,5 has GPUs 4
    and 5, so index 0 is device 4. The worker's own list is kept aside on the first call, so that a second call
    (the vLLM server's, then training's) maps through it again, not through training's narrower one.
    """
    training, vllm = gpu_plan(spec.resources, worker_gpus)
    if not worker_gpus:
        return GpuPlan([], [])
    seen = os.environ.setdefault(WORKER_DEVICES_ENV, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    devices = [d.strip() for d in seen.split(",") if d.strip()] or [str(i) for i in range(worker_gpus)]
    plan = GpuPlan([devices[i] for i in training], [devices[i] for i in vllm])
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(plan.training)
    return plan
