"""The HTTP API over real HTTP to a real `grpo serve` (uvicorn): answers, errors, and nothing lost to bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.processes import Service, base_env
from tests.specs import job_spec, seed_example


def stored_jobs(service: Service) -> list[dict]:  # type: ignore[type-arg]
    response = service.http.get("/v1/jobs", params={"limit": 100})
    assert response.status_code == 200
    return list(response.json()["data"])


def test_a_valid_spec_is_stored_queued_and_readable(api_only: Service) -> None:
    created = api_only.submit(seed_example("/models/tiny"))
    assert created["status"] == "queued" and created["id"].startswith("job-")
    assert created["model"] == "/models/tiny" and created["attempt"] == 0
    fetched = api_only.job(created["id"])
    assert fetched["spec"] == seed_example("/models/tiny")
    assert [j["id"] for j in stored_jobs(api_only)] == [created["id"]]
    assert api_only.http.get(f"/v1/jobs/{created['id']}/metrics").json() == {"data": [], "has_more": False}
    events = api_only.events(created["id"])
    assert [(e["kind"], e["message"]) for e in events] == [("status", "job queued")]


def test_a_bad_spec_is_a_422_naming_each_problem_and_nothing_is_stored(api_only: Service) -> None:
    api_only.submit(job_spec("/models/tiny"))  # something stored already must stay untouched
    spec = job_spec("/models/tiny")
    spec["args"].update(per_device_train_batch_size=3, num_generation=4)
    response = api_only.http.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    fields = {e["field"]: e["message"] for e in error["errors"]}
    assert "did you mean 'num_generations'?" in fields["args.num_generation"]
    assert "use per_device_train_batch_size 4 or 8" in fields["args.per_device_train_batch_size"]
    assert len(stored_jobs(api_only)) == 1


def test_structural_errors_are_422_with_field_paths(api_only: Service) -> None:
    spec = job_spec("/models/tiny")
    spec["reward_funcs"] = [{"type": "python"}]
    del spec["model"]
    response = api_only.http.post("/v1/jobs", json=spec)
    assert response.status_code == 422
    fields = {e["field"]: e["message"] for e in response.json()["error"]["errors"]}
    assert fields == {"model": "model is required", "reward_funcs[0].source": "reward_funcs[0].source is required"}
    assert stored_jobs(api_only) == []


def test_a_body_that_is_not_json_is_a_clear_422(api_only: Service) -> None:
    response = api_only.http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_json"
    assert "not valid JSON" in response.json()["error"]["message"]


def test_unknown_jobs_are_404s(api_only: Service) -> None:
    for path in ("/v1/jobs/job-nope", "/v1/jobs/job-nope/metrics", "/v1/jobs/job-nope/events"):
        response = api_only.http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["message"] == "job job-nope does not exist"
    response = api_only.http.get("/v1/jobs", params={"after": "job-nope"})
    assert response.status_code == 404


def test_bad_query_parameters_are_422s(api_only: Service) -> None:
    job = api_only.submit(job_spec("/models/tiny"))
    response = api_only.http.get(f"/v1/jobs/{job['id']}/metrics", params={"limit": 0})
    assert response.status_code == 422
    assert response.json()["error"]["errors"][0]["field"] == "query.limit"
    for path, params in (
        (f"/v1/jobs/{job['id']}/metrics", {"after_step": 10**20}),
        (f"/v1/jobs/{job['id']}/events", {"after": 10**20}),
    ):
        assert api_only.http.get(path, params=params).status_code == 422, path


def test_jobs_are_listed_newest_first_in_pages(api_only: Service) -> None:
    ids = [api_only.submit(job_spec("/models/tiny", name=f"job {i}"))["id"] for i in range(3)]
    first = api_only.http.get("/v1/jobs", params={"limit": 2}).json()
    second = api_only.http.get("/v1/jobs", params={"limit": 2, "after": first["data"][-1]["id"]}).json()
    assert [j["id"] for j in first["data"] + second["data"]] == list(reversed(ids))
    assert first["has_more"] and not second["has_more"]


def test_openapi_docs_and_health(api_only: Service) -> None:
    schema = api_only.http.get("/openapi.json").json()
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/metrics",
        "/v1/jobs/{job_id}/events",
        "/healthz",
    } <= set(schema["paths"])
    assert "Submit a GRPO job" in schema["paths"]["/v1/jobs"]["post"]["description"]
    assert "JobSpec" in schema["components"]["schemas"]
    assert "swagger-ui" in api_only.http.get("/docs").text
    assert api_only.http.get("/healthz").json() == {"status": "ok"}
    ready = {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok"}
    assert api_only.http.get("/readyz").json() == ready


# Each built-in reward and its parameters with their defaults, as the README's table lists them.
REQUIRED = "(required)"
BUILTIN_PARAMS: dict[str, dict[str, Any]] = {
    "length": {"ideal_length": 20},
    "format": {
        "pattern": r"<think>(.*?)</think>\s*<answer>(.*?)</answer>",
        "min_reasoning_chars": 20,
        "full_credit": 1.0,
        "partial_credit": 0.5,
    },
    "regex": {"pattern": REQUIRED, "match_score": 1.0, "miss_score": 0.0, "fullmatch": False, "ignore_case": False},
    "accuracy": {"column": "answer"},
    "exact_match": {"column": "answer", "strip": True, "ignore_case": False},
    "json_valid": {"schema": None},
}


def test_openapi_documents_every_builtin_reward_and_each_of_its_params(api_only: Service) -> None:
    schema = api_only.http.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = components[node["$ref"].removeprefix("#/components/schemas/")]
        return found

    def reward_kinds(request_schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The reward_funcs members a request body takes, by built-in name (or by type for the others)."""
        members = [resolve(m) for m in resolve(request_schema)["properties"]["reward_funcs"]["items"]["oneOf"]]
        return {(m["properties"].get("name", {}).get("const") or m["properties"]["type"]["const"]): m for m in members}

    jobs_body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    preview_body = schema["paths"]["/v1/rewards/preview"]["post"]["requestBody"]["content"]["application/json"]
    kinds = reward_kinds(jobs_body)
    assert set(kinds) == {*BUILTIN_PARAMS, "python", "model"}
    assert reward_kinds(preview_body["schema"]) == kinds  # the preview takes the same rewards
    for name, expected in BUILTIN_PARAMS.items():
        reward = kinds[name]
        assert reward["properties"]["type"]["const"] == "builtin", name
        assert len(reward.get("description", "")) > 20, f"{name} has no description"
        assert reward["properties"]["label"]["description"], name
        params = resolve(reward["properties"]["params"])
        assert set(params["properties"]) == set(expected), name
        assert params.get("required", []) == [p for p, default in expected.items() if default == REQUIRED]
        for param, default in expected.items():
            documented = params["properties"][param]
            assert len(documented.get("description", "")) > 10, f"{name}.params.{param} has no description"
            if default != REQUIRED:
                assert documented.get("default") == default, f"{name}.params.{param}"
    for other in ("python", "model"):
        assert kinds[other]["description"], other
        for field, documented in kinds[other]["properties"].items():
            assert field == "type" or documented.get("description"), f"{other}.{field} has no description"


def test_an_unreachable_broker_is_a_503_and_the_job_keeps_its_reason(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", broker_url="redis://127.0.0.1:9/0")  # nothing listens on port 9
    service = Service(env, tmp_path)
    try:
        service.start_api("serve")
        key = {"Idempotency-Key": "first-try"}
        response = service.http.post("/v1/jobs", json=job_spec("/models/tiny"), headers=key, timeout=60)
        assert response.status_code == 503
        assert "could not send the job to the broker" in response.json()["error"]["message"]
        (job,) = stored_jobs(service)
        assert job["status"] == "failed" and "submit it again" in job["error"]
        # Submitting again, with the same key, tries again instead of replaying the failure.
        retry = service.http.post("/v1/jobs", json=job_spec("/models/tiny"), headers=key, timeout=60)
        assert retry.status_code == 503 and "Idempotent-Replayed" not in retry.headers
        assert len(stored_jobs(service)) == 2
        ready = service.http.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
        assert ready.json() == {"status": "unavailable", "database": "ok", "broker": "unavailable", "storage": "ok"}
    finally:
        service.stop()


def test_the_api_serves_postgres_as_it_serves_sqlite(
    tmp_path: Path, postgres_url: str, redis_server: str, redis_queue: str
) -> None:
    env = base_env(tmp_path / "data", database_url=postgres_url, broker_url=redis_server, queue=redis_queue)
    service = Service(env, tmp_path)
    try:
        unmigrated = service.start(["serve", "--port", str(service.port)], "unmigrated")
        assert unmigrated.process.wait(timeout=60) != 0
        assert "run `grpo migrate`" in unmigrated.log()
        assert service.start(["migrate"], "migrate").process.wait(timeout=60) == 0
        service.start_api("serve")
        job = service.submit(seed_example("/models/tiny"))
        assert service.job(job["id"])["status"] == "queued"
        assert httpx.get(f"{service.url}/readyz").json()["database"] == "ok"
    finally:
        service.stop()


def test_idempotency_key_returns_the_first_job_and_refuses_another_spec(api_only: Service) -> None:
    spec = job_spec("/models/tiny")
    first = api_only.http.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "retry-1"})
    again = api_only.http.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers

    other = dict(spec, name="another job")
    conflict = api_only.http.post("/v1/jobs", json=other, headers={"Idempotency-Key": "retry-1"})
    assert conflict.status_code == 409
    assert "already used for job " + first.json()["id"] in conflict.json()["error"]["message"]
    fresh = api_only.http.post("/v1/jobs", json=other, headers={"Idempotency-Key": "retry-2"})
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]
    assert len(stored_jobs(api_only)) == 2


def test_a_queued_job_can_be_paused_resumed_and_cancelled(api_only: Service) -> None:
    job = api_only.submit(job_spec("/models/tiny"))
    path = f"/v1/jobs/{job['id']}"
    assert api_only.http.post(f"{path}/resume").status_code == 409  # not paused
    assert api_only.http.post(f"{path}/pause").json()["status"] == "paused"
    assert api_only.http.post(f"{path}/pause").status_code == 409
    assert api_only.http.post(f"{path}/resume").json()["status"] == "queued"
    assert api_only.http.post(f"{path}/cancel").json()["status"] == "cancelled"
    refused = api_only.http.post(f"{path}/pause")
    assert refused.status_code == 409
    assert (
        refused.json()["error"]["message"]
        == f"job {job['id']} is cancelled: only a queued or running job can be paused"
    )
    statuses = [e["data"]["status"] for e in api_only.events(job["id"]) if e["kind"] == "status"]
    assert statuses == ["queued", "paused", "queued", "cancelled"]
    for action in ("cancel", "pause", "resume"):
        assert api_only.http.post(f"/v1/jobs/job-nope/{action}").status_code == 404
