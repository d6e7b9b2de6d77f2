"""A real GRPO job through the whole service: POST -> database row -> Celery task -> real worker process ->
GRPOTrainer on the tiny model -> metric rows -> the polling endpoint. On the embedded default and on
Postgres + Redis."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from tests.processes import TERMINAL, Service
from tests.specs import job_spec, python_reward, seed_example

EVERY_STEP_KEYS = {
    "reward",
    "reward_std",
    "kl",
    "loss",
    "entropy",
    "completions/mean_length",
    "rewards/reward_len/mean",
    "rewards/format_reward/mean",
    "rewards/problem_reward/mean",
}


@pytest.fixture(params=["embedded", "postgres_redis"])
def service(request: pytest.FixtureRequest) -> Service:
    fixture = "embedded_service" if request.param == "embedded" else "production_service"
    found: Service = request.getfixturevalue(fixture)
    return found


def poll_like_a_user(service: Service, job_id: str, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Poll the metrics with the after_step cursor while the job runs, as a client would."""
    seen: list[dict[str, Any]] = []
    after_step = -1
    deadline = time.monotonic() + timeout
    while True:
        status = service.job(job_id)["status"]
        page = service.http.get(f"/v1/jobs/{job_id}/metrics", params={"after_step": after_step}).json()
        seen += page["data"]
        if page["data"]:
            after_step = page["data"][-1]["step"]
        if status in TERMINAL and not page["has_more"]:
            return seen
        assert time.monotonic() < deadline, f"job still {status}\n{service.logs()}"
        time.sleep(0.05)


def test_seed_example_trains_and_every_metric_reaches_the_polling_endpoint(service: Service, tiny_model: Path) -> None:
    job = service.submit(seed_example(tiny_model))
    polled = poll_like_a_user(service, job["id"])
    final = service.job(job["id"])
    assert final["status"] == "succeeded", f"{final['error']}\n{service.logs()}"

    # Every step once, in order, as polled live and as read afterwards.
    steps = [p["step"] for p in polled]
    assert steps == list(range(1, final["total_steps"] + 1))
    assert service.all_metrics(job["id"]) == polled
    for point in polled:
        assert point["metrics"].keys() >= EVERY_STEP_KEYS, point
        assert all(v is None or (isinstance(v, int | float) and math.isfinite(v)) for v in point["metrics"].values())
        assert 0 < point["epoch"] <= 3
    assert any(p["metrics"]["kl"] > 0 for p in polled[1:])  # beta > 0: the policy drifts from the reference
    assert final["latest_step"] == steps[-1] and final["latest_metrics"] == polled[-1]["metrics"]
    assert final["summary"]["train_runtime"] > 0 and "train_loss" in final["summary"]
    assert final["started_at"] <= final["finished_at"]

    statuses = [e["data"]["status"] for e in service.events(job["id"]) if e["kind"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    job_dir = Path(service.env["GRPO_DATA_DIR"]) / "jobs" / job["id"]
    assert (job_dir / "attempt-1" / "final-model" / "config.json").is_file()
    checkpoints = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    # The trainer saves a checkpoint at the last step; the final model is listed after it.
    assert [c["name"] for c in checkpoints] == [f"checkpoint-{steps[-1]}", "final"]
    final_model = checkpoints[-1]
    assert (final_model["step"], final_model["attempt"]) == (steps[-1], 1)
    assert final_model["size_bytes"] > 0 and final_model["metrics"] == polled[-1]["metrics"]
    assert "'reward':" in (job_dir / "train.log").read_text()


def test_a_failing_reward_fails_its_job_and_the_worker_runs_the_next(service: Service, tiny_model: Path) -> None:
    exploding = python_reward("def explode(completions, **kwargs):\n    raise ValueError('reward exploded')\n")
    bad = service.submit(job_spec(tiny_model, reward_funcs=[exploding]))
    good = service.submit(job_spec(tiny_model))  # queued behind the bad one, on the same worker

    bad_final = service.wait_finished(bad["id"])
    assert bad_final["status"] == "failed"
    assert bad_final["error"] == (
        "training: reward function 'explode' raised ValueError: reward exploded "
        "(reward_funcs[0] line 2: raise ValueError('reward exploded'))"
    )
    (error_event,) = [e for e in service.events(bad["id"]) if e["kind"] == "error"]
    assert "ValueError: reward exploded" in error_event["data"]["traceback"]

    good_final = service.wait_finished(good["id"])
    assert good_final["status"] == "succeeded", f"{good_final['error']}\n{service.logs()}"
    assert good_final["worker"] == bad_final["worker"]
    assert [p["step"] for p in service.all_metrics(good["id"])] == list(range(1, 9))


def test_unloadable_inputs_fail_with_readable_errors(
    embedded_service: Service, tiny_model: Path, tmp_path: Path
) -> None:
    missing_model = embedded_service.submit(job_spec(str(tmp_path / "no-model")))
    no_prompt_file = tmp_path / "questions.jsonl"
    no_prompt_file.write_text('{"question": "2+2?"}\n{"question": "3+3?"}\n')
    no_prompt = embedded_service.submit(job_spec(tiny_model, train_dataset={"path": str(no_prompt_file)}))

    assert embedded_service.wait_finished(missing_model["id"])["error"] == (
        f"finding the model: model '{tmp_path / 'no-model'}' does not exist on this worker: give the path of a "
        "saved model (a folder with config.json) that the worker can read, or a hub id like Qwen/Qwen2-0.5B-Instruct"
    )
    assert (
        "train_dataset has no 'prompt' column (its columns: question)"
        in embedded_service.wait_finished(no_prompt["id"])["error"]
    )


def test_bf16_is_refused_at_submit_when_the_embedded_service_has_no_gpu(
    embedded_service: Service, tiny_model: Path
) -> None:
    spec = job_spec(tiny_model)
    spec["args"]["bf16"] = True
    response = embedded_service.http.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    assert "args.bf16=true needs a GPU, and this deployment trains on CPUs only" in response.text
    assert embedded_service.http.get("/v1/jobs").json()["data"] == []
