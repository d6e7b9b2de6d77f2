"""Multi-process jobs (`resources.processes`) on the CPU, end to end: two ranks through torchrun with gloo, the
engine `accelerate launch` uses underneath, on the real service. Metrics come from rank 0 only; a pause stops every
rank at the same step; a cancel and a lost worker end every rank."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psutil

from tests.e2e.test_lifecycle import (
    SLOW_REWARD,
    event_messages,
    steps_of,
    survivors,
    wait_for_event,
    worker_process,
)
from tests.processes import Service
from tests.specs import job_spec

TWO_RANKS = {"processes": 2, "gpus": 0}


def two_rank_job(model: Path, steps: int, **args: Any) -> dict[str, Any]:
    spec = job_spec(model, reward_funcs=[SLOW_REWARD], resources=TWO_RANKS)
    spec["args"].update(max_steps=steps, **args)
    return spec


def ranks_of(worker: psutil.Process) -> list[psutil.Process]:
    """The worker's descendants that are ranks of a job (`python -m worker.rank_main`, not the launcher that names
    it)."""
    found = []
    for process in worker.children(recursive=True):
        command = process.cmdline()
        if "worker.rank_main" in command and "torch.distributed.run" not in command:
            found.append(process)
    return found


def wait_for_ranks(worker: psutil.Process, count: int, timeout: float = 60) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while len(found := ranks_of(worker)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} ranks running"
        time.sleep(0.2)
    return found


def test_two_ranks_train_with_gloo_and_each_step_is_logged_once(production_service: Service, tiny_model: Path) -> None:
    service = production_service
    job = service.submit(job_spec(tiny_model, resources=TWO_RANKS))  # 8 steps
    final = service.wait_finished(job["id"], timeout=180)
    assert final["status"] == "succeeded", final["error"]
    points = service.all_metrics(job["id"], page_size=100)
    assert [p["step"] for p in points] == list(range(1, 9))  # rank 0's logs only: no step twice
    # Two prompts, four completions each, on each of two ranks: every step covers the dataset once, where one
    # process (a batch of 4) would cover half of it.
    assert [p["epoch"] for p in points] == [float(step) for step in range(1, 9)]
    messages = event_messages(service, job["id"])
    assert "2 training processes launched with torchrun (gloo, on the CPU)" in messages
    log = (Path(service.env["GRPO_DATA_DIR"]) / "jobs" / job["id"] / "train.log").read_text()
    assert "launching 2 training processes" in log and "torch.distributed.run --nproc_per_node 2" in log
    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["name"] for c in listed][-1] == "final"


def test_a_pause_stops_every_rank_at_one_step_and_a_cancel_ends_them_all(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    worker = worker_process(service)
    job = service.submit(two_rank_job(tiny_model, steps=2000))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3, timeout=120)
    assert len(wait_for_ranks(worker, 2)) == 2

    # Pause: rank 0 takes the request, every rank stops after the same step and the checkpoint is saved (a rank
    # that went on alone would wait forever in its next collective, and the pause would never complete).
    service.http.post(f"/v1/jobs/{job['id']}/pause")
    paused = service.wait_until(job["id"], lambda j: j["status"] == "paused", timeout=60)
    wait_for_event(service, job["id"], "job paused at step")
    paused_at = next(m for m in event_messages(service, job["id"]) if m.startswith("job paused at step"))
    step = int(paused_at.split("at step ")[1].split()[0])
    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert f"checkpoint-{step}" in [c["name"] for c in listed]
    assert paused["latest_step"] == step and ranks_of(worker) == []

    # Resume: both ranks continue from that checkpoint; then cancel: every rank is gone within 5 seconds.
    service.http.post(f"/v1/jobs/{job['id']}/resume")
    service.wait_until(job["id"], lambda j: j["status"] == "running" and (j["latest_step"] or 0) > step + 2, 120)
    assert f"attempt 2 resumes from checkpoint-{step} (saved by attempt 1)" in " ".join(
        event_messages(service, job["id"])
    )
    ranks = wait_for_ranks(worker, 2)
    started = time.monotonic()
    service.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert survivors(ranks, deadline=started + 5) == []
    assert service.wait_finished(job["id"], timeout=10)["status"] == "cancelled"
    steps = steps_of(service, job["id"])
    assert steps == list(range(1, len(steps) + 1))


def test_a_lost_worker_takes_every_rank_with_it_and_another_worker_resumes_the_job(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    job = service.submit(two_rank_job(tiny_model, steps=30, save_steps=5))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 7, timeout=120)
    lost = worker_process(service)
    ranks = wait_for_ranks(lost, 2)
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=10)
    # The ranks run in sessions of their own (torchrun's), out of reach of a process-group kill: they die with
    # their parent instead.
    assert survivors(ranks, deadline=time.monotonic() + 10) == []
    service.start_worker("worker-2")
    final = service.wait_finished(job["id"], timeout=240)
    assert final["status"] == "succeeded", final["error"]
    assert (final["attempt"], final["lost_attempts"]) == (2, 1)
    assert steps_of(service, job["id"]) == list(range(1, 31))
    resumed = [m for m in event_messages(service, job["id"]) if m.startswith("attempt 2 resumes from checkpoint-")]
    assert resumed and int(resumed[0].split("checkpoint-")[1].split()[0]) >= 5
