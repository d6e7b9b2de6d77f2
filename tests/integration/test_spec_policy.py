"""The operator's spec policy through a real `grpo serve` and `grpo up` over HTTP: refusals name their setting,
and nothing refused is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.processes import Service, base_env
from tests.specs import job_spec


def stored_jobs(service: Service) -> list[dict[str, Any]]:
    response = service.http.get("/v1/jobs", params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def refused(service: Service, path: str, body: dict[str, Any]) -> dict[str, str]:
    """{field: message} of the 422 the API answers `body` with."""
    response = service.http.post(path, json=body)
    assert response.status_code == 422, response.text
    return {e["field"]: e["message"] for e in response.json()["error"]["errors"]}


def test_a_spec_beyond_the_operators_policy_is_a_422_naming_the_setting_and_nothing_is_stored(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    service = Service(base_env(tmp_path / "data", hub="off", model_roots=str(models)), tmp_path)
    try:
        service.start_api("serve")
        outside = refused(service, "/v1/jobs", job_spec(tmp_path / "elsewhere" / "tiny"))
        assert list(outside) == ["model"]
        assert "is outside GRPO_MODEL_ROOTS" in outside["model"] and str(models) in outside["model"]

        spec = job_spec("Qwen/Qwen2-0.5B-Instruct", train_dataset={"hub": "openai/gsm8k", "name": "main"})
        spec["args"].update(trust_remote_code=True, hub_token="hf_secret")
        said = refused(service, "/v1/jobs", spec)
        assert "(GRPO_HUB=on allows it)" in said["model"] and "(GRPO_HUB=on allows it)" in said["train_dataset.hub"]
        assert "(GRPO_ALLOW_REMOTE_CODE=true allows it)" in said["args.trust_remote_code"]
        assert "credentials may not be sent in a spec" in said["args.hub_token"]

        judge = {"type": "model", "model": "org/reward-model"}
        previewed = refused(service, "/v1/rewards/preview", {"reward_funcs": [judge], "completions": ["a"]})
        assert "(GRPO_HUB=on allows it)" in previewed["reward_funcs[0].model"]

        assert stored_jobs(service) == []
        inside = service.submit(job_spec(models / "tiny"))  # what the policy allows is stored as ever
        assert [job["id"] for job in stored_jobs(service)] == [inside["id"]]
    finally:
        service.stop()


def test_grpo_up_without_roots_set_lets_its_one_user_name_paths_anywhere(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    del env["GRPO_MODEL_ROOTS"], env["GRPO_DATASET_ROOTS"]  # the user set none
    service = Service(env, tmp_path)
    try:
        up = service.start_api("up")
        assert "GRPO_PATHS=anywhere" in up.log()
        job = service.submit(
            job_spec(tmp_path / "my-models" / "tiny", train_dataset={"path": str(tmp_path / "q.jsonl")})
        )
        assert job["status"] == "queued"
    finally:
        service.stop()
