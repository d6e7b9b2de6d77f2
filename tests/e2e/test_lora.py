"""LoRA jobs (`peft_config`) through the whole service on the tiny model: the adapter trains, its checkpoints and
final download are adapters of the base model that PEFT loads, and a LoRA job whose worker is killed resumes from
its checkpoint (TRL's issue tracker reports PEFT runs restarting at step 0 on resume: this one does not)."""

from __future__ import annotations

import io
import json
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.e2e.test_lifecycle import SLOW_REWARD, event_messages, survivors, worker_process
from tests.processes import Service
from tests.specs import job_spec

LORA = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
LEARNING_RATE = 1e-3
# What a full model's checkpoint holds and an adapter's must not.
FULL_MODEL_FILES = {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "config.json"}


def lora_job(model: Path, steps: int, save_steps: int, **spec: Any) -> dict[str, Any]:
    job = job_spec(model, **{"peft_config": LORA, **spec})
    job["args"].update(max_steps=steps, save_steps=save_steps, learning_rate=LEARNING_RATE)
    return job


def download(service: Service, job_id: str, name: str, into: Path) -> Path:
    """The checkpoint's tar stream, unpacked under `into`; returns its folder."""
    response = service.http.get(f"/v1/jobs/{job_id}/checkpoints/{name}/download")
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar", response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        archive.extractall(into, filter="data")
    folder = into / f"{job_id}-{name if name == 'final' else 'checkpoint-' + name}"
    assert folder.is_dir(), sorted(p.name for p in into.iterdir())
    return folder


def assert_is_adapter_of(folder: Path, base_model: Path) -> dict[str, Any]:
    """The folder holds a LoRA adapter of `base_model` (its config and weights), and no full model weights."""
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files, files
    assert not files & FULL_MODEL_FILES, files & FULL_MODEL_FILES
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_model)
    assert (config["peft_type"], config["task_type"], config["r"], config["lora_alpha"]) == ("LORA", "CAUSAL_LM", 8, 16)
    return config


def linear_schedule(step: int, max_steps: int) -> float:
    """The learning rate transformers' default linear schedule (no warmup) logs at `step`."""
    return LEARNING_RATE * (max_steps - (step - 1)) / max_steps


def test_a_lora_job_trains_an_adapter_that_downloads_and_loads_onto_its_base_model(
    embedded_service: Service, tiny_model: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    service = embedded_service
    # A config PEFT would refuse is a 422 naming the field, and nothing is stored.
    refused = service.http.post("/v1/jobs", json=job_spec(tiny_model, peft_config={"rank": 8, "task_type": "SEQ_CLS"}))
    assert refused.status_code == 422, refused.text
    errors = {e["field"]: e["message"] for e in refused.json()["error"]["errors"]}
    assert "did you mean 'r'?" in errors["peft_config.rank"]
    assert "use 'CAUSAL_LM'" in errors["peft_config.task_type"]
    assert service.http.get("/v1/jobs").json()["data"] == []

    job = service.submit(lora_job(tiny_model, steps=8, save_steps=4))
    final = service.wait_finished(job["id"])
    assert final["status"] == "succeeded", f"{final['error']}\n{service.logs()}"

    points = service.all_metrics(job["id"])
    assert [p["step"] for p in points] == list(range(1, 9))
    assert all({"reward", "kl", "loss", "learning_rate"} <= p["metrics"].keys() for p in points)
    # GRPO's reference is the model with its adapter disabled: a fresh adapter (B = 0) is the base model, so kl is 0
    # at the first step, and grows as the adapter trains.
    assert points[0]["metrics"]["kl"] == 0 and points[-1]["metrics"]["kl"] > 0

    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [(c["name"], c["step"], c["adapter"], c["base_model"]) for c in listed] == [
        ("checkpoint-4", 4, True, str(tiny_model)),
        ("checkpoint-8", 8, True, str(tiny_model)),
        ("final", 8, True, str(tiny_model)),
    ]

    checkpoint = download(service, job["id"], "4", tmp_path / "checkpoint")
    assert_is_adapter_of(checkpoint, tiny_model)
    # Still a full training state to resume from: optimizer, scheduler, RNG, trainer state.
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= {
        p.name for p in checkpoint.iterdir()
    }

    adapter = download(service, job["id"], "final", tmp_path / "final")
    assert_is_adapter_of(adapter, tiny_model)
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    # The adapter, not a copy of the model: a fraction of its weights, and all the listing counts.
    assert (adapter / "adapter_model.safetensors").stat().st_size < (
        tiny_model / "model.safetensors"
    ).stat().st_size / 2
    assert listed[-1]["size_bytes"] == sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file())
    # LoRA's B matrices start at zero: training moved them.
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)

    # The download is usable as it is: PEFT loads it onto the base model, and it changes the model's output.
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    inputs = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base_logits = base(inputs).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
        adapted_logits = adapted(inputs).logits
    loaded = {n: p for n, p in adapted.named_parameters() if "lora_" in n}
    assert len(loaded) == len(weights)
    assert not torch.allclose(base_logits, adapted_logits)

    # target_modules that name nothing in the model: only the worker can tell, and the job fails saying so.
    bad = service.submit(lora_job(tiny_model, steps=2, save_steps=2, peft_config={"target_modules": ["nope"]}))
    failed = service.wait_finished(bad["id"])
    assert failed["status"] == "failed"
    assert "adding its LoRA adapter (peft_config)" in failed["error"] and "nope" in failed["error"], failed["error"]


def test_a_lora_job_whose_worker_is_killed_resumes_from_its_checkpoint(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    steps, save_steps = 24, 8
    job = service.submit(lora_job(tiny_model, steps=steps, save_steps=save_steps, reward_funcs=[SLOW_REWARD]))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= save_steps + 2)
    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert listed[0]["name"] == f"checkpoint-{save_steps}" and listed[0]["adapter"]
    lost = worker_process(service)
    descendants = lost.children(recursive=True)
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=10)
    assert survivors(descendants, deadline=time.monotonic() + 5) == []
    service.start_worker("worker-2")

    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded", f"{final['error']}\n{service.logs()}"
    assert (final["attempt"], final["lost_attempts"]) == (2, 1)
    resumed = [m for m in event_messages(service, job["id"]) if m.startswith("attempt 2 resumes from checkpoint-")]
    assert resumed, event_messages(service, job["id"])
    step = int(resumed[0].split("checkpoint-")[1].split()[0])
    assert step >= save_steps and step % save_steps == 0 and "(saved by attempt 1)" in resumed[0]

    # Every step once. Each attempt's reward sandbox logs its pid: attempt 2 logged only the steps after the
    # checkpoint, so it started at step + 1, not at 0.
    points = service.all_metrics(job["id"], page_size=100)
    assert [p["step"] for p in points] == list(range(1, steps + 1))
    writers = [p["metrics"]["sandbox_pid"] for p in points]
    assert len(set(writers[:step])) == 1 and len(set(writers[step:])) == 1 and writers[0] != writers[-1]
    # The scheduler resumed: the learning rate continues the linear decay (a fresh one would restart at 1e-3).
    for point in points:
        assert point["metrics"]["learning_rate"] == pytest.approx(linear_schedule(point["step"], steps))
    # The adapter's weights resumed: a fresh adapter is the base model (kl 0 at its first step); this one is not.
    assert points[0]["metrics"]["kl"] == 0 and points[step]["metrics"]["kl"] > 0

    # Attempt 2's checkpoints are adapters whose optimizer and trainer state count every step since the start.
    attempt_dir = Path(service.env["GRPO_DATA_DIR"]) / "jobs" / job["id"] / "attempt-2"
    last = attempt_dir / f"checkpoint-{steps}"
    assert_is_adapter_of(last, tiny_model)
    optimizer = torch.load(last / "optimizer.pt", weights_only=True)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {steps}  # Adam's step count: not steps - step
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged == list(range(1, steps + 1))
    assert_is_adapter_of(attempt_dir / "final-model", tiny_model)
    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert listed[-1]["name"] == "final" and all(c["adapter"] for c in listed)
