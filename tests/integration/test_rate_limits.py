"""Rate limits per key, over HTTP to a real `grpo serve`: on the embedded default (counters in the API's memory) the
request past GRPO_RATE_LIMIT_SUBMIT / _PREVIEW / _UPLOAD is a 429 with Retry-After naming the limit, and one key's
requests never count against another's; on Postgres + Redis two API processes count together."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.callers import PROMPTS_JSONL, Caller, prefix
from tests.processes import Service, base_env
from tests.specs import job_spec

LIMIT = "2/minute"
LIMITED = {"rate_limit_submit": LIMIT, "rate_limit_preview": LIMIT, "rate_limit_upload": LIMIT}


@dataclass(frozen=True)
class Limited:
    """A route with a rate limit, and a request to it that succeeds while under the limit."""

    setting: str
    method: str
    path: str
    options: dict[str, Any]
    success: int


ROUTES = {
    "submit": Limited("GRPO_RATE_LIMIT_SUBMIT", "POST", "/v1/jobs", {"json": job_spec("/models/tiny")}, 201),
    "preview": Limited(
        "GRPO_RATE_LIMIT_PREVIEW",
        "POST",
        "/v1/rewards/preview",
        {"json": {"reward_funcs": [{"type": "builtin", "name": "length"}], "completions": ["hi", "hello"]}},
        200,
    ),
    "upload": Limited(
        "GRPO_RATE_LIMIT_UPLOAD", "POST", "/v1/files", {"files": {"file": ("p.jsonl", PROMPTS_JSONL)}}, 201
    ),
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`grpo serve` on the embedded default (no worker) with every rate limit at 2 a minute."""
    folder = tmp_path_factory.mktemp("rate-limits")
    running = Service(base_env(folder / "data", **LIMITED), folder)
    try:
        running.start_api("serve")
        yield running
    finally:
        running.stop()


def member(service: Service, project: str = "alpha") -> Caller:
    """A caller with a new member key of its own (so each test starts with its counters at zero)."""
    return Caller(service, "member", service.make_key(project, "member"))


def send(caller: Caller, route: Limited) -> httpx.Response:
    return caller.request(route.method, route.path, **route.options)


def assert_rate_limited(response: httpx.Response, route: Limited, key: str) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["type"] == "rate_limited"
    assert f"{route.setting}={LIMIT}" in error["message"]
    assert f"key {prefix(key)} made 2" in error["message"]


@pytest.mark.parametrize("action", ROUTES)
def test_the_request_past_a_keys_limit_is_a_429_with_retry_after_naming_the_limit(
    service: Service, action: str
) -> None:
    route, caller = ROUTES[action], member(service)
    for _ in range(2):
        assert send(caller, route).status_code == route.success
    assert caller.key is not None
    assert_rate_limited(send(caller, route), route, caller.key)


@pytest.mark.parametrize("action", ROUTES)
def test_another_keys_requests_are_not_limited_by_the_first_keys(service: Service, action: str) -> None:
    route, first = ROUTES[action], member(service)
    for _ in range(3):
        send(first, route)
    assert send(first, route).status_code == 429
    # Another key of the same project, and a key of another project, each have their own count.
    for other in (member(service), member(service, "beta")):
        for _ in range(2):
            assert send(other, route).status_code == route.success
        assert send(other, route).status_code == 429


def test_an_upload_past_the_limit_is_refused_before_its_body_is_read(service: Service) -> None:
    route, caller = ROUTES["upload"], member(service)
    for _ in range(2):
        send(caller, route)
    # A body that is not even a form: read, it would be refused as such (400); the limit answers first.
    headers = {"content-type": "multipart/form-data; boundary=x"}
    response = caller.post("/v1/files", content=b"not a form", headers=headers)
    assert caller.key is not None
    assert_rate_limited(response, route, caller.key)


def test_a_key_that_may_not_do_the_action_is_a_403_not_counted(service: Service) -> None:
    viewer = Caller(service, "viewer", service.make_key("alpha", "viewer"))
    for _ in range(3):
        assert send(viewer, ROUTES["submit"]).status_code == 403


def test_the_429_is_in_each_limited_routes_openapi_responses(service: Service) -> None:
    paths = service.http.get("/openapi.json").json()["paths"]
    for route in ROUTES.values():
        answer = paths[route.path][route.method.lower()]["responses"]["429"]
        assert "Retry-After" in answer["headers"]


@pytest.mark.postgres
@pytest.mark.redis
def test_two_api_processes_on_redis_count_a_keys_requests_together(
    tmp_path: Path, postgres_url: str, redis_server: str, redis_queue: str
) -> None:
    env = base_env(tmp_path / "data", database_url=postgres_url, broker_url=redis_server, queue=redis_queue, **LIMITED)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = Service(env, tmp_path / "a"), Service(dict(env), tmp_path / "b")
    try:
        first.start_api("serve")
        second.use_key(first.make_key("alpha", "member"))
        second.start_api("serve")
        key = second.key
        assert key is not None
        on_first, on_second = Caller(first, "member", key), Caller(second, "member", key)
        route = ROUTES["submit"]
        assert send(on_first, route).status_code == 201
        assert send(on_second, route).status_code == 201
        assert_rate_limited(send(on_first, route), route, key)
        assert_rate_limited(send(on_second, route), route, key)
        # The count outlives the process: restarted, the API still refuses the key.
        second.stop()
        restarted = Service(dict(env), tmp_path / "b")
        restarted.use_key(key)
        try:
            restarted.start_api("serve")
            assert_rate_limited(send(Caller(restarted, "member", key), route), route, key)
        finally:
            restarted.stop()
    finally:
        first.stop()
        second.stop()


def test_an_unreachable_rate_limit_store_lets_requests_through_and_the_log_says_so(tmp_path: Path) -> None:
    # Nothing listens on port 9: the store refuses every connection.
    env = base_env(tmp_path / "data", rate_limit_storage_url="redis://127.0.0.1:9/0", **LIMITED)
    service = Service(env, tmp_path)
    try:
        service.start_api("serve")
        caller = member(service)
        for _ in range(3):
            assert send(caller, ROUTES["submit"]).status_code == 201
        log = service.logs()
        assert "rate limits not enforced" in log
        assert "Traceback" not in log
    finally:
        service.stop()
