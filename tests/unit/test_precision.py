"""The precision a worker picks for the device a job lands on (this machine has no GPU)."""

from __future__ import annotations

import pytest
import torch

from shared.settings import Settings
from worker.config import choose_precision
from worker.failures import TrainingFailed


def test_a_cpu_worker_trains_in_fp32_unless_told_otherwise() -> None:
    assert not torch.cuda.is_available()
    assert choose_precision({}, Settings(device="auto")) == {"bf16": False, "fp16": False, "use_cpu": True}
    assert choose_precision({"bf16": False}, Settings(device="cpu"))["bf16"] is False


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_cpu_worker_refuses_half_precision_clearly(precision: str) -> None:
    with pytest.raises(TrainingFailed, match=f"args.{precision}=true needs a GPU, and this worker has only a CPU"):
        choose_precision({precision: True}, Settings(device="auto"))


def test_a_worker_told_to_use_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(TrainingFailed, match="GRPO_DEVICE is cuda but this worker sees no CUDA GPU"):
        choose_precision({}, Settings(device="cuda"))
