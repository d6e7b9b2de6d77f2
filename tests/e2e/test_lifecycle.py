"""Jobs survive faults and obey users: cancel, pause and resume, a killed or stopped worker, a broker that loses
its messages, a job delivered twice, a training step that never ends. Real Postgres, Redis and worker processes
(leases of 3 s, see FAST_LIFECYCLE in conftest)."""

from __future__ import annotations

import io
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from shared.queue import make_celery, send_run_job
from shared.settings import Settings
from tests.processes import Service, base_env
from tests.specs import job_spec, python_reward

# About 7 steps a second: slow enough to act on a job mid-run, fast enough for a test.
SLOW_REWARD = python_reward(
    "import time\n\n"
    "def slow_length(completions, **kwargs):\n"
    "    time.sleep(0.1)\n"
    "    return [-abs(10 - len(c)) for c in completions]\n"
)


def slow_job(model: Path, steps: int, save_steps: int = 1000) -> dict[str, Any]:
    spec = job_spec(model, reward_funcs=[SLOW_REWARD])
    spec["args"].update(max_steps=steps, save_steps=save_steps)
    return spec


def training_pids(service: Service, job_id: str) -> list[int]:
    return [e["data"]["pid"] for e in service.events(job_id) if e["message"].startswith("training process")]


def event_messages(service: Service, job_id: str) -> list[str]:
    return [e["message"] for e in service.events(job_id)]


def wait_for_event(service: Service, job_id: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in m for m in event_messages(service, job_id)):
        assert time.monotonic() < deadline, f"no event {text!r}: {event_messages(service, job_id)}"
        time.sleep(0.1)


def steps_of(service: Service, job_id: str) -> list[int]:
    return [p["step"] for p in service.all_metrics(job_id, page_size=100)]


def worker_process(service: Service, name: str = "worker.log") -> psutil.Process:
    return psutil.Process(next(p for p in service.processes if p.log_path.name == name).process.pid)


def test_cancel_ends_a_running_job_within_5_seconds_and_a_queued_one_at_once(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    running = service.submit(slow_job(tiny_model, steps=100_000))
    waiting = service.submit(job_spec(tiny_model))  # queued behind it
    service.wait_until(running["id"], lambda j: (j["latest_step"] or 0) >= 2)
    (pid,) = training_pids(service, running["id"])
    child = psutil.Process(pid)

    queued_cancel = service.http.post(f"/v1/jobs/{waiting['id']}/cancel")
    assert queued_cancel.status_code == 200 and queued_cancel.json()["status"] == "cancelled"
    asked = time.monotonic()
    response = service.http.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    child.wait(timeout=5)  # psutil raises TimeoutExpired if the process outlives the 5 s
    assert time.monotonic() - asked < 5
    assert not child.is_running()

    wait_for_event(service, running["id"], "training process of attempt 1 ended: job cancelled")
    never_ran = service.job(waiting["id"])
    assert (never_ran["status"], never_ran["attempt"], never_ran["started_at"]) == ("cancelled", 0, None)
    again = service.http.post(f"/v1/jobs/{running['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == f"job {running['id']} is already cancelled: there is nothing to cancel"
    # The worker is free for the next job.
    assert service.wait_finished(service.submit(job_spec(tiny_model))["id"])["status"] == "succeeded"


def test_a_killed_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    job = service.submit(slow_job(tiny_model, steps=40, save_steps=10))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 12)
    assert [c["name"] for c in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]][:1] == [
        "checkpoint-10"
    ]
    lost = worker_process(service)
    lost.send_signal(signal.SIGKILL)
    lost.wait(timeout=10)
    service.start_worker("worker-2")

    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded", final["error"]
    assert (final["attempt"], final["lost_attempts"]) == (2, 1)
    assert steps_of(service, job["id"]) == list(range(1, 41))  # every step once, after the resume too
    messages = event_messages(service, job["id"])
    assert any("the lease of attempt 1" in m and "expired (worker lost): requeued" in m for m in messages)
    resumed = [m for m in messages if m.startswith("attempt 2 resumes from checkpoint-")]
    assert resumed and int(resumed[0].split("checkpoint-")[1].split()[0]) >= 10


def test_a_stopped_worker_saves_a_checkpoint_and_another_worker_finishes_the_job(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    job = service.submit(slow_job(tiny_model, steps=40))  # no periodic checkpoint: the stop makes one
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3)
    service.start_worker("worker-2")
    first = next(p for p in service.processes if p.log_path.name == "worker.log")
    first.process.send_signal(signal.SIGTERM)  # a `docker compose` scale-down
    assert first.process.wait(timeout=30) == 0

    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded", final["error"]
    assert (final["attempt"], final["lost_attempts"]) == (2, 0)
    assert final["worker"] != job["worker"] and "worker-" in final["worker"]
    assert steps_of(service, job["id"]) == list(range(1, 41))
    messages = event_messages(service, job["id"])
    handed_back = [m for m in messages if "stopping: job handed back at step" in m]
    assert handed_back and "(checkpoint saved)" in handed_back[0]
    step = int(handed_back[0].split("at step ")[1].split()[0])
    assert f"attempt 2 resumes from checkpoint-{step} (saved by attempt 1)" in " ".join(messages)


def test_a_paused_job_frees_its_worker_and_resumes_from_its_checkpoint(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    job = service.submit(slow_job(tiny_model, steps=30))
    service.wait_until(job["id"], lambda j: (j["latest_step"] or 0) >= 3)
    asked = service.http.post(f"/v1/jobs/{job['id']}/pause").json()
    assert (asked["status"], asked["requested_action"]) == ("running", "pause")
    paused = service.wait_until(job["id"], lambda j: j["status"] == "paused", timeout=30)
    assert paused["requested_action"] is None
    paused_at = [m for m in event_messages(service, job["id"]) if m.startswith("job paused at step")]
    step = int(paused_at[0].split("at step ")[1].split()[0])
    assert f"checkpoint-{step}" in [
        c["name"] for c in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    ]

    # The worker is free while the job is paused.
    other = service.wait_finished(service.submit(job_spec(tiny_model))["id"])
    assert other["status"] == "succeeded" and service.job(job["id"])["status"] == "paused"
    assert service.http.post(f"/v1/jobs/{job['id']}/pause").status_code == 409

    assert service.http.post(f"/v1/jobs/{job['id']}/resume").json()["status"] in ("queued", "running")
    final = service.wait_finished(job["id"], timeout=120)
    assert final["status"] == "succeeded" and final["attempt"] == 2
    assert steps_of(service, job["id"]) == list(range(1, 31))
    assert service.http.post(f"/v1/jobs/{job['id']}/resume").status_code == 409


def test_queued_jobs_still_run_when_redis_loses_its_messages(
    production_service: Service, tiny_model: Path, redis_server: str
) -> None:
    service = production_service
    busy = service.submit(slow_job(tiny_model, steps=20))
    service.wait_until(busy["id"], lambda j: j["status"] == "running")
    waiting = [service.submit(job_spec(tiny_model))["id"] for _ in range(3)]
    redis.Redis.from_url(redis_server).flushall()  # the queued messages are gone

    for job_id in [busy["id"], *waiting]:
        assert service.wait_finished(job_id, timeout=120)["status"] == "succeeded"
    for job_id in waiting:
        assert "message sent again: the broker had lost it" in event_messages(service, job_id)


def test_a_job_delivered_twice_is_trained_once(production_service: Service, tiny_model: Path) -> None:
    service = production_service
    service.start_worker("worker-2")
    job = service.submit(job_spec(tiny_model))
    settings = Settings(
        broker_url=service.env["GRPO_BROKER_URL"],
        queue=service.env["GRPO_QUEUE"],
        data_dir=Path(service.env["GRPO_DATA_DIR"]),
    )
    send_run_job(make_celery(settings), settings, job["id"])  # a second delivery, to the other worker

    final = service.wait_finished(job["id"])
    assert (final["status"], final["attempt"]) == ("succeeded", 1)
    time.sleep(1)
    assert len(training_pids(service, job["id"])) == 1
    logs = service.logs()
    assert logs.count(f"job {job['id']} claimed (attempt 1)") == 1
    assert f"job {job['id']} is" in logs and "not queued: nothing to do" in logs


def test_a_reward_that_never_returns_trips_the_stall_watchdog(tmp_path: Path, tiny_model: Path) -> None:
    # The reward's own time limit (the sandbox's) is set past the stall limit, so that the watchdog acts first.
    env = base_env(tmp_path / "data", stall_seconds="4", heartbeat_seconds="0.5", reward_timeout_seconds="600")
    service = Service(env, tmp_path)
    try:
        service.start_api("up")
        forever = python_reward("import time\n\ndef forever(completions, **kwargs):\n    time.sleep(10**6)\n")
        stuck = service.submit(job_spec(tiny_model, reward_funcs=[forever]))
        final = service.wait_finished(stuck["id"], timeout=60)
        assert final["status"] == "failed"
        assert final["error"].startswith("stalled: no training progress for 4 s (at step 0); stuck in ")
        assert "_receive (sandbox.py:" in final["error"] and " <- forever (__init__.py:" in final["error"]
        # The worker lives on.
        assert service.wait_finished(service.submit(job_spec(tiny_model))["id"])["status"] == "succeeded"
    finally:
        service.stop()


def test_checkpoints_and_the_final_model_download_as_tar_archives(embedded_service: Service, tiny_model: Path) -> None:
    service = embedded_service
    spec = job_spec(tiny_model)
    spec["args"].update(save_steps=4)
    job = service.wait_finished(service.submit(spec)["id"])
    listed = service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [(c["name"], c["step"]) for c in listed] == [("checkpoint-4", 4), ("checkpoint-8", 8), ("final", 8)]
    assert listed[0]["metrics"]["reward"] == service.all_metrics(job["id"])[3]["metrics"]["reward"]

    for name, expected in (("final", "model.safetensors"), ("4", "trainer_state.json")):
        response = service.http.get(f"/v1/jobs/{job['id']}/checkpoints/{name}/download")
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
            names = archive.getnames()
        folder = f"{job['id']}-{'final' if name == 'final' else 'checkpoint-' + name}"
        assert f"{folder}/{expected}" in names and f"{folder}/config.json" in names
    assert service.http.get(f"/v1/jobs/{job['id']}/checkpoints/99/download").status_code == 404
    assert service.http.get("/v1/jobs/job-nope/checkpoints").status_code == 404


def test_the_service_keeps_only_save_total_limit_checkpoints(embedded_service: Service, tiny_model: Path) -> None:
    spec = job_spec(tiny_model)
    spec["args"].update(save_steps=2, save_total_limit=1)
    job = embedded_service.wait_finished(embedded_service.submit(spec)["id"])
    listed = embedded_service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["name"] for c in listed] == ["checkpoint-8", "final"]
    attempt_dir = Path(embedded_service.env["GRPO_DATA_DIR"]) / "jobs" / job["id"] / "attempt-1"
    assert [p.name for p in attempt_dir.glob("checkpoint-*")] == ["checkpoint-8"]
