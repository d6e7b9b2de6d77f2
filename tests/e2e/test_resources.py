"""Jobs go only to workers that can hold them, through Postgres + Redis and a real `grpo worker` (this machine's
worker has no GPU): a job asking for a GPU waits, saying why, while the CPU worker goes on with the jobs it can
hold; the worker registers the devices it found."""

from __future__ import annotations

import time
from pathlib import Path

from tests.processes import Service
from tests.specs import job_spec


def test_a_job_no_worker_can_hold_waits_with_a_reason_while_the_worker_runs_the_others(
    production_service: Service, tiny_model: Path
) -> None:
    (worker,) = production_service.http.get("/v1/workers").json()["data"]
    assert worker["alive"] and worker["devices"]["cuda_devices"] == 0 and worker["devices"]["cpus"] >= 1

    needs_gpu = production_service.submit(job_spec(tiny_model, resources={"gpus": 1}))
    submitted = time.monotonic()
    assert needs_gpu["status"] == "queued"
    assert needs_gpu["status_reason"] == (
        "needs a worker with 1 GPU(s) (resources.gpus + resources.vllm_gpus), and the largest worker running has 0: "
        "start a worker with at least 1 GPUs, or ask for fewer"
    )
    events = production_service.events(needs_gpu["id"])
    assert any(e["message"].startswith("waiting: needs a worker with 1 GPU(s)") for e in events)

    fits = production_service.submit(job_spec(tiny_model))
    assert fits["status_reason"] is None
    assert production_service.wait_finished(fits["id"])["status"] == "succeeded"
    # Long enough for an idle worker's sweep to have resent a message it took for lost (FAST_LIFECYCLE: resend
    # after 2 s, idle for 2 s, a sweep every 0.5 s): the worker still must not take the GPU job.
    time.sleep(max(0.0, submitted + 6 - time.monotonic()))
    waiting = production_service.job(needs_gpu["id"])
    assert waiting["status"] == "queued" and waiting["attempt"] == 0
    assert "the largest worker running has 0" in waiting["status_reason"]
    # The idle worker does not take the GPU job's message for a lost one (it does not take that queue).
    assert not any("sent again" in e["message"] for e in production_service.events(needs_gpu["id"]))
