"""What a job asks of a worker (`resources`: GPUs for training, GPUs for a vLLM server, processes, a distributed
preset), what a worker has (its devices), and the one place that matches them: the Celery queue a job is sent to,
and the queues a worker takes jobs from.

A job that needs no particular GPU count goes to the base queue, which every worker takes: it trains on one GPU of
a GPU worker, or on the CPU of a CPU worker. A job that needs N GPUs (training plus vLLM) goes to `<base>.gpus<N>`,
which only workers with at least N GPUs take; so a job can never land on a worker that cannot hold it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.spec.problems import Problem

DistributedPreset = Literal["ddp", "zero2", "zero3", "fsdp"]
# The most GPUs one job may ask for (one machine).
MAX_GPUS = 16


class Resources(BaseModel):
    """What the job needs from the worker that runs it."""

    model_config = ConfigDict(extra="forbid")

    gpus: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GPUS,
        description="GPUs for training, one process each. Default: one GPU on a GPU worker, the CPU on a CPU "
        "worker; 0 trains on the CPU.",
    )
    vllm_gpus: int = Field(
        default=0,
        ge=0,
        le=MAX_GPUS,
        description="GPUs for the vLLM generation server the worker starts for the job (args.use_vllm with "
        'args.vllm_mode "server"); 0 when there is none.',
    )
    processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Training processes (`accelerate launch`); default: one per training GPU, or 1. On the CPU, "
        "several processes train with gloo.",
    )
    distributed: DistributedPreset | None = Field(
        default=None,
        description="How several processes share the model: ddp (the default), zero2 or zero3 (DeepSpeed), fsdp.",
    )

    def gpus_needed(self) -> int:
        """GPUs the worker must have: training's and vLLM's (0: any worker will do)."""
        return (self.gpus or 0) + self.vllm_gpus

    def process_count(self) -> int:
        """How many training processes the job runs."""
        return self.processes or max(self.gpus or 1, 1)


def queue_for(base: str, gpus_needed: int) -> str:
    """The queue a job needing `gpus_needed` GPUs is sent to."""
    return base if gpus_needed <= 0 else f"{base}.gpus{gpus_needed}"


def queues_for_worker(base: str, gpu_count: int) -> list[str]:
    """The queues a worker with `gpu_count` GPUs takes jobs from: every job it can hold."""
    return [base, *(queue_for(base, n) for n in range(1, min(gpu_count, MAX_GPUS) + 1))]


def gpu_count(devices: dict[str, Any] | None) -> int:
    """How many CUDA GPUs a worker registered with (0: CPU only)."""
    return int((devices or {}).get("cuda_devices") or 0)


def vllm_server_mode(args: dict[str, Any]) -> bool:
    """Whether the job's args generate with a vLLM server (`use_vllm` with `vllm_mode` "server")."""
    return bool(args.get("use_vllm")) and args.get("vllm_mode", "colocate") == "server"


def names_vllm_server(args: dict[str, Any]) -> bool:
    """Whether the job's args name the vLLM server to use (TRL takes a base URL, or a host and a port)."""
    return any(args.get(name) is not None for name in ("vllm_server_base_url", "vllm_server_host", "vllm_server_port"))


def check_resources(
    resources: Resources, args: dict[str, Any], *, device: str = "auto", vllm_server_url: str | None = None
) -> list[Problem]:
    """What the resources ask that no worker could give, or that the job's args contradict.

    `device` is the deployment's (`cpu`: no worker has a GPU); `vllm_server_url` is an operator's vLLM server
    (GRPO_VLLM_SERVER_URL), which server-mode jobs then use.
    """
    problems: list[Problem] = []
    if device == "cpu" and resources.gpus_needed():
        problems.append(
            Problem(
                "resources",
                f"resources ask for {resources.gpus_needed()} GPU(s), and this deployment has only CPUs "
                "(GRPO_DEVICE=cpu): set resources.gpus and resources.vllm_gpus to 0",
            )
        )
    if resources.gpus and resources.processes and resources.processes != resources.gpus:
        problems.append(
            Problem(
                "resources.processes",
                f"resources.processes ({resources.processes}) must equal resources.gpus ({resources.gpus}): training "
                f"runs one process per GPU; leave processes out, or set it to {resources.gpus}",
            )
        )
    use_vllm = bool(args.get("use_vllm"))
    server_mode = vllm_server_mode(args)
    if resources.vllm_gpus and not server_mode:
        problems.append(
            Problem(
                "resources.vllm_gpus",
                "resources.vllm_gpus reserves GPUs for a vLLM server the worker starts, which only args.use_vllm "
                'with args.vllm_mode "server" uses: set those, or resources.vllm_gpus to 0',
            )
        )
    if server_mode and not resources.vllm_gpus and not names_vllm_server(args) and not vllm_server_url:
        problems.append(
            Problem(
                "args.vllm_mode",
                'args.vllm_mode "server" needs a vLLM server: set resources.vllm_gpus (the worker starts one for '
                "the job on its own GPUs), or args.vllm_server_base_url (one you run)",
            )
        )
    if server_mode and resources.vllm_gpus and names_vllm_server(args):
        problems.append(
            Problem(
                "resources.vllm_gpus",
                "resources.vllm_gpus has the worker start a vLLM server for the job, and args names another one "
                "(vllm_server_base_url, vllm_server_host or vllm_server_port): keep one of the two",
            )
        )
    tensor_parallel = args.get("vllm_tensor_parallel_size")
    if server_mode and resources.vllm_gpus and tensor_parallel and tensor_parallel != resources.vllm_gpus:
        problems.append(
            Problem(
                "args.vllm_tensor_parallel_size",
                f"args.vllm_tensor_parallel_size ({tensor_parallel}) must equal resources.vllm_gpus "
                f"({resources.vllm_gpus}): the job's vLLM server splits the model over all of its GPUs; leave it "
                f"out, or set it to {resources.vllm_gpus}",
            )
        )
    if use_vllm and device == "cpu":
        problems.append(
            Problem("args.use_vllm", "vLLM generates on GPUs, and this deployment has only CPUs: remove args.use_vllm")
        )
    if (resources.processes or 1) > 1 and resources.gpus is None and device != "cpu":
        problems.append(
            Problem(
                "resources.gpus",
                f"resources.processes ({resources.processes}) needs resources.gpus: {resources.processes} (a process "
                "per GPU) or 0 (the processes train on the CPU, with gloo)",
            )
        )
    on_cpu = resources.gpus == 0 or (resources.gpus is None and device == "cpu")
    if resources.distributed in ("zero2", "zero3", "fsdp") and on_cpu:
        problems.append(
            Problem(
                "resources.distributed",
                f"resources.distributed {resources.distributed!r} shards the model over GPUs: use 'ddp' (or none) "
                "for processes on the CPU",
            )
        )
    return problems


class DoesNotFit(RuntimeError):
    """The job needs more GPUs than this worker has (the queues should have kept it away)."""


def gpu_plan(resources: Resources, worker_gpus: int) -> tuple[list[int], list[int]]:
    """Which of the worker's GPUs train and which serve vLLM: `(training, vllm)`, as CUDA device indices.

    On a GPU worker a job that names no GPU count trains on one GPU; `gpus: 0` (or a CPU worker) trains on the CPU.
    """
    if worker_gpus <= 0:
        if resources.gpus_needed():
            raise DoesNotFit(
                f"the job needs {resources.gpus_needed()} GPU(s) and this worker has none: it should not have been "
                "sent here (check that the worker's GRPO_QUEUE matches the API's)"
            )
        return [], []
    training = 1 if resources.gpus is None else resources.gpus
    if training + resources.vllm_gpus > worker_gpus:
        raise DoesNotFit(
            f"the job needs {training + resources.vllm_gpus} GPU(s) (training {training}, vLLM "
            f"{resources.vllm_gpus}) and this worker has {worker_gpus}"
        )
    return list(range(training)), list(range(training, training + resources.vllm_gpus))
