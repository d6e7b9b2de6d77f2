"""A project's running-job limit on the production path (Postgres, Redis, two real workers training the tiny
model): alpha may run one job at a time, so its second job waits, saying why, while its first runs and beta's job
takes the other worker; then it starts and succeeds. Submits over the queue and step limits are refused."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tests.callers import Caller
from tests.processes import Service
from tests.specs import job_spec


def _at(job: dict[str, Any], field: str) -> datetime:
    return datetime.fromisoformat(job[field])


def test_a_job_over_the_running_limit_waits_its_turn_without_holding_back_another_project(
    two_workers: Service, tiny_model: Path
) -> None:
    service = two_workers
    created = service.http.post("/v1/projects", json={"name": "alpha", "max_running_jobs": 1, "max_queued_jobs": 2})
    assert created.status_code == 201, created.text
    alpha = Caller(service, "alpha member", service.make_key("alpha", "member"))
    beta = Caller(service, "beta member", service.make_key("beta", "member"))

    first = alpha.submit(job_spec(tiny_model, args={**job_spec(tiny_model)["args"], "max_steps": 12}))
    second = alpha.submit(job_spec(tiny_model, args={**job_spec(tiny_model)["args"], "max_steps": 2}))
    # Two queued already (the first may not have been claimed yet) or one: the limit is 2 either way.
    other = beta.submit(job_spec(tiny_model, args={**job_spec(tiny_model)["args"], "max_steps": 2}))

    waiting = service.wait_until(second, lambda job: job["status_reason"] is not None, timeout=120)
    assert waiting["status"] == "queued"
    assert waiting["status_reason"] == "project alpha: 1 of 1 running jobs"
    assert service.job(first)["status"] in ("running", "succeeded")

    ended = {job_id: service.wait_finished(job_id, timeout=240) for job_id in (first, second, other)}
    assert [ended[job_id]["status"] for job_id in (first, second, other)] == ["succeeded"] * 3, ended
    # Alpha's jobs ran one after the other; beta's ran beside alpha's first, on the other worker.
    assert _at(ended[second], "started_at") >= _at(ended[first], "finished_at")
    assert _at(ended[other], "started_at") < _at(ended[first], "finished_at")
    assert ended[second]["status_reason"] is None
    messages = [event["message"] for event in service.events(second)]
    assert "waiting: project alpha: 1 of 1 running jobs" in messages


def test_submits_over_the_queue_and_step_limits_are_refused(api_only: Service, tiny_model: Path) -> None:
    service = api_only
    made = service.http.post("/v1/projects", json={"name": "tight", "max_queued_jobs": 0, "max_steps": 4})
    assert made.status_code == 201, made.text
    member = Caller(service, "tight member", service.make_key("tight", "member"))

    too_long = member.post("/v1/jobs", json=job_spec(tiny_model))  # 8 steps
    assert too_long.status_code == 422
    assert too_long.json()["error"]["errors"][0]["field"] == "args.max_steps"
    assert "at most 4 steps per job (max_steps)" in too_long.json()["error"]["message"]

    full = member.post("/v1/jobs", json=job_spec(tiny_model, args={**job_spec(tiny_model)["args"], "max_steps": 4}))
    assert full.status_code == 429
    assert full.json()["error"]["type"] == "quota_exceeded"
    assert "0 of 0 queued jobs (max_queued_jobs)" in full.json()["error"]["message"]
    assert member.ids("/v1/jobs") == set()  # nothing stored
