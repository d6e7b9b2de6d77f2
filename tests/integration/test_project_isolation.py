"""Two projects on the production path (Postgres, Redis, a real worker training the tiny model on the CPU): alpha's
job trains on alpha's file, and beta, trying alpha's ids directly, finds none of it, while the job runs and after
it ended; alpha's own views work; the audit events name the key that acted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.callers import Caller, prefix
from tests.processes import TERMINAL, Service
from tests.specs import job_spec


def alpha_and_beta(service: Service) -> tuple[Caller, Caller]:
    """A member of `alpha` and a member of `beta`."""
    alpha = Caller(service, "alpha member", service.make_key("alpha", "member"))
    beta = Caller(service, "beta member", service.make_key("beta", "member"))
    return alpha, beta


def job_routes(job_id: str, file_id: str) -> list[tuple[str, str]]:
    """Every route that names a job or a file: reads, downloads, actions and the file's delete."""
    job = f"/v1/jobs/{job_id}"
    return [
        ("GET", job),
        ("GET", f"{job}/metrics"),
        ("GET", f"{job}/events"),
        ("GET", f"{job}/samples"),
        ("GET", f"{job}/series"),
        ("GET", f"{job}/metrics/export"),
        ("GET", f"{job}/stream"),
        ("GET", f"{job}/checkpoints"),
        ("GET", f"{job}/checkpoints/final/download"),
        ("POST", f"{job}/cancel"),
        ("POST", f"{job}/pause"),
        ("POST", f"{job}/resume"),
        ("GET", f"/v1/files/{file_id}"),
        ("DELETE", f"/v1/files/{file_id}"),
    ]


def answer_without_body(caller: Caller, method: str, path: str) -> tuple[int, str]:
    """Status and (for an answer that is not a live stream) body."""
    caller.http.cookies.clear()
    with caller.http.stream(method, path, headers=caller.headers()) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, ""
        return response.status_code, response.read().decode(errors="replace")


def assert_all_absent(beta: Caller, job_id: str, file_id: str) -> None:
    problems = []
    for method, path in job_routes(job_id, file_id):
        status, body = answer_without_body(beta, method, path)
        expected = f"file {file_id} does not exist" if "/files/" in path else f"job {job_id} does not exist"
        if status != 404 or httpx.Response(status, content=body).json()["error"]["message"] != expected:
            problems.append(f"{method} {path} -> {status} {body[:200]}")
    assert not problems, "alpha's job or file reached by beta's member:\n" + "\n".join(problems)


def worker_jobs(caller: Caller) -> dict[str, str | None]:
    """Each worker the caller is shown, with the job it runs (as the caller may see it)."""
    response = caller.get("/v1/workers")
    assert response.status_code == 200, response.text
    return {worker["name"]: worker["current_job"] for worker in response.json()["data"]}


def beta_view_while_alpha_runs(service: Service, alpha: Caller, beta: Caller, job_id: str) -> dict[str, str | None]:
    """beta's view of the workers taken while a worker runs alpha's job: alpha sees it run just before and after."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        before = worker_jobs(alpha)
        if job_id in before.values():
            seen_by_beta = worker_jobs(beta)
            if job_id in worker_jobs(alpha).values():
                assert set(seen_by_beta) == set(before), "beta is not shown the same (shared) workers"
                return seen_by_beta
        if alpha.get(f"/v1/jobs/{job_id}").json()["status"] in TERMINAL:
            break
        time.sleep(0.05)
    raise AssertionError(f"no worker was seen running {job_id} (twice in a row) by alpha's key\n{service.logs()}")


def finished(alpha: Caller, job_id: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = alpha.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s")


def test_another_projects_member_finds_nothing_of_alphas_running_job(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    alpha, beta = alpha_and_beta(service)
    try:
        file_id = alpha.upload()
        # A few more steps than usual, so that the job is seen running.
        spec = job_spec(tiny_model, name="alpha's run", train_dataset={"file_id": file_id})
        spec["args"]["max_steps"] = 24
        job_id = alpha.submit(spec)

        beta_sees = beta_view_while_alpha_runs(service, alpha, beta, job_id)
        assert job_id not in beta_sees.values() and all(current is None for current in beta_sees.values())
        assert_all_absent(beta, job_id, file_id)  # while it runs: a cancel or pause would have hit it

        naming_alphas_file = beta.post("/v1/jobs", json=job_spec(tiny_model, train_dataset={"file_id": file_id}))
        assert naming_alphas_file.status_code == 422, naming_alphas_file.text
        (problem,) = naming_alphas_file.json()["error"]["errors"]
        assert problem["field"] == "train_dataset.file_id" and "is not an uploaded file" in problem["message"]

        job = finished(alpha, job_id)
        assert job["status"] == "succeeded", f"{job}\n{service.logs()}"
        assert_all_absent(beta, job_id, file_id)  # and once it has a final model to download
        assert job_id not in beta.ids("/v1/jobs") and file_id not in beta.ids("/v1/files")

        # alpha's own views of it all work.
        assert alpha.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 1000}).json()["data"]
        assert alpha.get(f"/v1/jobs/{job_id}/samples").status_code == 200
        assert alpha.get(f"/v1/jobs/{job_id}/series").json()["steps"]
        assert alpha.get(f"/v1/jobs/{job_id}/metrics/export").text.startswith("step,epoch,logged_at")
        checkpoints = alpha.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
        assert "final" in [c["name"] for c in checkpoints]
        download = alpha.get(f"/v1/jobs/{job_id}/checkpoints/final/download")
        assert download.status_code == 200 and download.headers["content-type"] == "application/x-tar"
        stream = alpha.get(f"/v1/jobs/{job_id}/stream")  # the job ended: the stream ends too
        assert stream.status_code == 200 and "event: end" in stream.text
        assert alpha.get(f"/v1/files/{file_id}").status_code == 200
        assert job_id in alpha.ids("/v1/jobs") and file_id in alpha.ids("/v1/files")
        queued = next(e for e in alpha.get(f"/v1/jobs/{job_id}/events").json()["data"] if e["message"] == "job queued")
        assert queued["data"]["by"] == prefix(alpha.key or "")
    finally:
        alpha.close()
        beta.close()


def test_audit_events_name_the_key_that_queued_and_cancelled_a_job(
    production_service: Service, tiny_model: Path
) -> None:
    service = production_service
    alpha, beta = alpha_and_beta(service)
    try:
        spec = job_spec(tiny_model, name="to cancel")
        spec["args"]["max_steps"] = 10_000  # queued or running when it is cancelled, never done first
        job_id = alpha.submit(spec)
        assert beta.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
        cancelled = alpha.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        events = alpha.get(f"/v1/jobs/{job_id}/events").json()["data"]
        by = {e["data"]["status"]: e["data"].get("by") for e in events if e["kind"] == "status"}
        member = prefix(alpha.key or "")
        assert by["queued"] == member and by["cancelled"] == member, events
        assert beta.key is not None and all(prefix(beta.key) not in str(e["data"]) for e in events)
    finally:
        alpha.close()
        beta.close()
