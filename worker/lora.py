"""LoRA jobs: the PEFT `LoraConfig` a job's `peft_config` becomes (checked at submit by `shared.spec.peft`)."""

from __future__ import annotations

from peft import LoraConfig

from shared.spec.job import JobSpec
from shared.spec.peft import TASK_TYPE


def build_lora_config(spec: JobSpec) -> LoraConfig | None:
    """The LoraConfig GRPOTrainer wraps the job's model with, always for a causal LM; None: the whole model trains.

    PEFT records the model's `name_or_path` (the job's `model`) in the adapter as its base model.
    """
    if spec.peft_config is None:
        return None
    return LoraConfig(**{**spec.peft_config, "task_type": TASK_TYPE})
