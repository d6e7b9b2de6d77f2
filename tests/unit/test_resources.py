"""Resources: what a job may ask, the queue it is routed to, the queues a worker takes, and how a worker's GPUs are
split between training and a vLLM server."""

from __future__ import annotations

from typing import Any

import pytest

from shared.spec.job import parse_spec
from shared.spec.resources import DoesNotFit, Resources, check_resources, gpu_plan, queue_for, queues_for_worker
from tests.specs import job_spec


def problems(
    resources: dict[str, Any], device: str = "auto", vllm_server_url: str | None = None, **args: Any
) -> dict[str, str]:
    found = check_resources(Resources(**resources), args, device=device, vllm_server_url=vllm_server_url)
    return {p.field: p.message for p in found}


def test_a_job_goes_to_the_queue_of_the_gpus_it_needs_and_a_worker_takes_every_queue_it_can_hold() -> None:
    assert queue_for("grpo", 0) == "grpo"
    assert queue_for("grpo", 3) == "grpo.gpus3"
    assert queues_for_worker("grpo", 0) == ["grpo"]
    assert queues_for_worker("grpo", 2) == ["grpo", "grpo.gpus1", "grpo.gpus2"]
    # A job fits a worker exactly when the worker takes the job's queue.
    for needed in range(0, 5):
        for worker in range(0, 5):
            assert (queue_for("q", needed) in queues_for_worker("q", worker)) == (needed <= worker)


def test_defaults_fit_one_gpu_or_the_cpu() -> None:
    default = Resources()
    assert default.gpus_needed() == 0 and default.process_count() == 1
    assert gpu_plan(default, 0) == ([], [])
    assert gpu_plan(default, 4) == ([0], [])
    assert gpu_plan(Resources(gpus=0), 4) == ([], [])
    assert gpu_plan(Resources(gpus=2, vllm_gpus=1), 4) == ([0, 1], [2])
    assert Resources(gpus=2, vllm_gpus=1).gpus_needed() == 3 and Resources(gpus=2).process_count() == 2
    assert Resources(processes=2).process_count() == 2  # two processes on the CPU (gloo)
    with pytest.raises(DoesNotFit, match="needs 3 GPU"):
        gpu_plan(Resources(gpus=2, vllm_gpus=1), 2)
    with pytest.raises(DoesNotFit, match="has none"):
        gpu_plan(Resources(gpus=1), 0)


def test_resources_a_deployment_cannot_give_are_refused_with_the_fix() -> None:
    assert problems({"gpus": 1}, device="cpu") == {
        "resources": "resources ask for 1 GPU(s), and this deployment has only CPUs (GRPO_DEVICE=cpu): set "
        "resources.gpus and resources.vllm_gpus to 0"
    }
    assert "must equal resources.gpus (2)" in problems({"gpus": 2, "processes": 3})["resources.processes"]
    assert "only args.use_vllm" in problems({"vllm_gpus": 1})["resources.vllm_gpus"]
    assert problems({"vllm_gpus": 1}, use_vllm=True, vllm_mode="server") == {}
    assert "needs a vLLM server" in problems({}, use_vllm=True, vllm_mode="server")["args.vllm_mode"]
    assert problems({}, use_vllm=True, vllm_mode="server", vllm_server_base_url="http://gen:8000") == {}
    assert problems({}, vllm_server_url="http://operator:8000", use_vllm=True, vllm_mode="server") == {}
    assert problems({}, use_vllm=True) == {}  # colocate: TRL's default mode, on the training GPUs
    assert "only CPUs" in problems({}, device="cpu", use_vllm=True)["args.use_vllm"]
    assert (
        "shards the model over GPUs"
        in problems({"distributed": "zero3", "processes": 2}, device="cpu")["resources.distributed"]
    )
    assert "shards the model" in problems({"distributed": "fsdp", "processes": 2, "gpus": 0})["resources.distributed"]
    assert problems({"distributed": "ddp", "processes": 2, "gpus": 0}) == {}
    assert problems({"processes": 2}, device="cpu") == {}  # a CPU deployment: gloo
    assert "needs resources.gpus: 2" in problems({"processes": 2})["resources.gpus"]


def test_resources_are_part_of_the_spec_and_a_typo_is_named() -> None:
    served = job_spec("m", resources={"gpus": 2, "vllm_gpus": 1})
    served["args"].update(use_vllm=True, vllm_mode="server")
    assert parse_spec(served).resources.gpus_needed() == 3
    with pytest.raises(Exception, match=r"resources\.gpu"):
        parse_spec(job_spec("m", resources={"gpu": 2}))
    with pytest.raises(Exception, match=r"resources\.distributed"):
        parse_spec(job_spec("m", resources={"distributed": "horovod"}))


def test_a_job_server_and_a_named_server_are_not_both_asked_and_the_server_spans_its_gpus() -> None:
    server = {"use_vllm": True, "vllm_mode": "server"}
    assert (
        "keep one of the two"
        in problems({"vllm_gpus": 1}, **server, vllm_server_base_url="http://gen:8000")["resources.vllm_gpus"]
    )
    assert "keep one of the two" in problems({"vllm_gpus": 1}, **server, vllm_server_port=8001)["resources.vllm_gpus"]
    # TRL also takes a host and a port in place of a base URL: either names the server.
    assert problems({}, **server, vllm_server_host="10.0.0.5", vllm_server_port=8001) == {}
    assert (
        "must equal resources.vllm_gpus (2)"
        in problems({"vllm_gpus": 2}, **server, vllm_tensor_parallel_size=1)["args.vllm_tensor_parallel_size"]
    )
    assert problems({"vllm_gpus": 2}, **server, vllm_tensor_parallel_size=2) == {}
    assert problems({}, use_vllm=True, vllm_tensor_parallel_size=2) == {}  # colocate's own setting
