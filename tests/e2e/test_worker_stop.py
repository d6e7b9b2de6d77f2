"""A worker asked to stop (SIGTERM, as `docker compose` scale-down sends) mid-job ends the training child and
records the job as failed, instead of training on until it is killed and leaving the job `running`."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from tests.processes import Service
from tests.specs import job_spec


def test_a_worker_stopped_mid_job_ends_its_child_and_fails_the_job(
    production_service: Service, tiny_model: Path
) -> None:
    spec = job_spec(tiny_model)
    spec["args"]["max_steps"] = 100_000
    job = production_service.submit(spec)
    production_service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3)
    (started,) = [e for e in production_service.events(job["id"]) if e["message"].startswith("training process")]
    child = psutil.Process(started["data"]["pid"])

    worker = next(p for p in production_service.processes if p.log_path.name == "worker.log")
    stopped_at = time.monotonic()
    worker.process.terminate()
    assert worker.process.wait(timeout=30) == 0, worker.log()
    assert time.monotonic() - stopped_at < 15

    final = production_service.job(job["id"])
    assert final["status"] == "failed"
    assert final["error"] == "the worker was stopped while training: submit the job again"
    child.wait(timeout=10)  # gone (psutil raises TimeoutExpired if it still runs)
    assert not child.is_running()
