"""Who may do what on every route, over HTTP to one real `grpo serve` (embedded SQLite, no worker) that holds two
projects, `alpha` and `beta`.

The matrix is generated from the API's own OpenAPI document, plus the routes it leaves out (the dashboard, its
sign-in, the documentation pages): each route is sent by each kind of caller, with alpha's queued job, alpha's
uploaded file and the final model in its path. What a route needs follows from the lists below: open (OPEN_PATHS),
an admin's key (ADMIN_ONLY), a viewer's key for a GET, a member's key for anything else. So a route added later is
checked by default; it also fails `test_every_documented_route_is_in_the_route_table` until someone reviews it here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import REMEMBER_SECONDS
from tests.callers import PROMPTS_JSONL, Caller, prefix, revoke, serve_for_module, wrong_key
from tests.processes import Service
from tests.specs import job_spec

Op = tuple[str, str]  # (method, the path as the OpenAPI document writes it)

# The routes that answer without a key. Any other route refuses a missing, wrong or revoked key with a 401.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/login"})
# The routes only an admin key may use: the operators'.
ADMIN_ONLY: frozenset[Op] = frozenset(
    {
        ("GET", "/metrics"),
        ("GET", "/v1/projects"),
        ("POST", "/v1/projects"),
        ("PATCH", "/v1/projects/{name}"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("POST", "/v1/keys/{prefix}/revoke"),
        ("GET", "/v1/audit"),
    }
)
# Routes that end or remove the object they name: sent after every other route.
DESTRUCTIVE: frozenset[Op] = frozenset(
    {("POST", "/v1/jobs/{job_id}/cancel"), ("DELETE", "/v1/files/{file_id}"), ("DELETE", "/v1/secrets/{name}")}
)
# Served, but left out of the OpenAPI document.
NOT_IN_SCHEMA: tuple[Op, ...] = (
    ("GET", "/"),
    ("GET", "/login"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
)
# A queued job has no final model yet: its owner is told so, naming the checkpoint (not the job).
DOWNLOAD: Op = ("GET", "/v1/jobs/{job_id}/checkpoints/{name}/download")

NO_BODY, JOB_SPEC, UPLOAD, PREVIEW, TOOL_PREVIEW = "none", "job spec", "upload", "preview", "tool preview"
NEW_PROJECT, NO_LIMIT_CHANGE, NEW_KEY = "new project", "no limit change", "new key"
# The secret each caller sets in its own project (POST /v1/secrets) and then deletes, last (DELETE /v1/secrets/{name}).
NEW_SECRET, MATRIX_SECRET = "new secret", "MATRIX_TOKEN"
# Every route of the OpenAPI document, reviewed for this matrix, and the body it is sent with.
ROUTE_TABLE: dict[Op, str] = {
    ("GET", "/healthz"): NO_BODY,
    ("GET", "/readyz"): NO_BODY,
    ("GET", "/metrics"): NO_BODY,
    ("GET", "/v1/workers"): NO_BODY,
    ("GET", "/v1/jobs"): NO_BODY,
    ("POST", "/v1/jobs"): JOB_SPEC,
    ("GET", "/v1/jobs/{job_id}"): NO_BODY,
    ("POST", "/v1/jobs/{job_id}/pause"): NO_BODY,
    ("POST", "/v1/jobs/{job_id}/resume"): NO_BODY,
    ("POST", "/v1/jobs/{job_id}/cancel"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/metrics"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/events"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/checkpoints"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/checkpoints/{name}/download"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/stream"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/samples"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/series"): NO_BODY,
    ("GET", "/v1/jobs/{job_id}/metrics/export"): NO_BODY,
    ("GET", "/v1/files"): NO_BODY,
    ("POST", "/v1/files"): UPLOAD,
    ("GET", "/v1/files/{file_id}"): NO_BODY,
    ("DELETE", "/v1/files/{file_id}"): NO_BODY,
    ("POST", "/v1/rewards/preview"): PREVIEW,
    ("POST", "/v1/tools/preview"): TOOL_PREVIEW,
    ("GET", "/v1/projects"): NO_BODY,
    ("POST", "/v1/projects"): NEW_PROJECT,
    ("PATCH", "/v1/projects/{name}"): NO_LIMIT_CHANGE,  # on alpha: a limit it does not have removed
    ("GET", "/v1/keys"): NO_BODY,
    ("POST", "/v1/keys"): NEW_KEY,
    ("POST", "/v1/keys/{prefix}/revoke"): NO_BODY,  # on the key revoked already: it stays revoked
    ("GET", "/v1/audit"): NO_BODY,
    ("GET", "/v1/secrets"): NO_BODY,
    ("POST", "/v1/secrets"): NEW_SECRET,
    ("DELETE", "/v1/secrets/{name}"): NO_BODY,  # the secret the same sweep set
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PREVIEW_BODY = {
    "reward_funcs": [{"type": "builtin", "name": "length", "params": {"ideal_length": 4}}],
    "completions": ["four", "two"],
}

NO_KEY, BAD_KEY, REVOKED_KEY = "no key", "bad key", "revoked key"
VIEWER, OTHER_MEMBER, MEMBER, ADMIN = "alpha viewer", "beta member", "alpha member", "alpha admin"


def needs(op: Op) -> str:
    """What a route asks of its caller: open, or the weakest role that may use it."""
    method, path = op
    if path in OPEN_PATHS:
        return "open"
    if op in ADMIN_ONLY:
        return "admin"
    return "viewer" if method == "GET" else "member"


def names_an_object(op: Op) -> bool:
    return "{job_id}" in op[1] or "{file_id}" in op[1]


@dataclass(frozen=True)
class Objects:
    """What the path parameters are filled with."""

    job_id: str
    file_id: str

    def not_found(self, op: Op) -> str:
        """What the API says of these objects on `op` when they do not exist (or are another project's)."""
        return f"file {self.file_id} does not exist" if "{file_id}" in op[1] else f"job {self.job_id} does not exist"

    def no_final_model(self) -> str:
        return f"checkpoint final of job {self.job_id} does not exist"


@dataclass
class Answer:
    caller: str
    op: Op
    url: str
    status: int
    headers: httpx.Headers
    body: str

    @property
    def message(self) -> str | None:
        try:
            message: str = httpx.Response(self.status, content=self.body).json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return None
        return message

    def __str__(self) -> str:
        return f"{self.caller}: {self.op[0]} {self.url} -> {self.status} {self.body[:300]!r}"


@dataclass
class World:
    """The service, its callers, and the objects each project holds from the start."""

    service: Service
    callers: dict[str, Caller]
    model: Path
    schema: dict[str, Any]
    alpha: Objects  # alpha's queued job and uploaded file, which no test ends or deletes
    beta: Objects

    def snapshot_of_alpha(self) -> tuple[list[tuple[str, str]], set[str]]:
        """alpha's jobs (with their statuses) and files, as alpha's viewer sees them."""
        viewer = self.callers[VIEWER]
        jobs = viewer.get("/v1/jobs", params={"limit": 100})
        assert jobs.status_code == 200, jobs.text
        return sorted((j["id"], j["status"]) for j in jobs.json()["data"]), viewer.ids("/v1/files")

    def snapshot_of_access(self) -> tuple[list[Any], list[Any]]:
        """The projects with their limits, and the keys with their roles and revocations, as an admin sees them."""
        admin = self.callers[ADMIN]
        projects, keys = admin.get("/v1/projects"), admin.get("/v1/keys")
        assert projects.status_code == keys.status_code == 200, (projects.text, keys.text)
        fields = ("prefix", "project", "role", "revoked_at")
        return projects.json()["data"], [[k[f] for f in fields] for k in keys.json()["data"]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serve_for_module(tmp_path_factory, "access-matrix") as service:
        keys: dict[str, str | None] = {
            NO_KEY: None,
            VIEWER: service.make_key("alpha", "viewer"),
            OTHER_MEMBER: service.make_key("beta", "member"),
            MEMBER: service.make_key("alpha", "member"),
            ADMIN: service.make_key("alpha", "admin"),
            REVOKED_KEY: service.make_key("alpha", "member"),
        }
        revoke(service, keys[REVOKED_KEY] or "")  # before the API ever saw it work
        keys[BAD_KEY] = wrong_key(keys[MEMBER] or "")
        callers = {name: Caller(service, name, key) for name, key in keys.items()}
        model = tmp_path_factory.mktemp("models") / "tiny"  # never trained: no worker runs
        schema = callers[NO_KEY].get("/openapi.json")
        assert schema.status_code == 200, schema.text
        member, other = callers[MEMBER], callers[OTHER_MEMBER]
        alpha = Objects(member.submit(job_spec(model, name="alpha's job")), member.upload())
        beta = Objects(other.submit(job_spec(model, name="beta's job")), other.upload())
        try:
            yield World(service, callers, model, schema.json(), alpha, beta)
        finally:
            for caller in callers.values():
                caller.close()


@pytest.fixture
def fresh_alpha(world: World) -> Objects:
    """A queued job and a file of alpha's own for a test whose caller may pause, cancel and delete them."""
    member = world.callers[MEMBER]
    return Objects(member.submit(job_spec(world.model, name="to act on")), member.upload())


def documented_routes(schema: dict[str, Any]) -> list[Op]:
    return [
        (method.upper(), path) for path, item in schema["paths"].items() for method in item if method in HTTP_METHODS
    ]


def matrix_routes(world: World) -> list[Op]:
    """Every route, in the document's order, the destructive ones last."""
    routes = documented_routes(world.schema)
    routes += [op for op in NOT_IN_SCHEMA if op not in routes]
    return sorted(routes, key=lambda op: op in DESTRUCTIVE)


def path_name(template: str) -> str:
    """What a route's `{name}` is: a project, a secret, or the final model."""
    if template.startswith("/v1/projects/"):
        return "alpha"
    return MATRIX_SECRET if template.startswith("/v1/secrets/") else "final"


def send(world: World, caller: Caller, op: Op, objects: Objects) -> Answer:
    method, template = op
    url = template.format(
        job_id=objects.job_id,
        file_id=objects.file_id,
        name=path_name(template),
        prefix=prefix(world.callers[REVOKED_KEY].key or ""),
    )
    params: dict[str, Any] = {}
    if template == "/login" and caller.key is not None:
        params["key"] = caller.key  # the sign-in link carries the key
    if op == ("GET", "/v1/jobs"):
        params["limit"] = 100
    body = ROUTE_TABLE.get(op, NO_BODY)
    options: dict[str, Any] = {}
    if body == JOB_SPEC:
        options["json"] = job_spec(world.model, name=f"sent by {caller.name}")
    elif body == UPLOAD:
        options["files"] = {"file": ("prompts.jsonl", PROMPTS_JSONL)}
    elif body == PREVIEW:
        options["json"] = PREVIEW_BODY
    elif body == TOOL_PREVIEW:
        options["json"] = {
            "tools": [{"type": "builtin", "name": "calculator"}],
            "calls": [{"name": "calculator", "arguments": {"expression": "2 + 2"}}],
        }
    elif body == NEW_PROJECT:
        options["json"] = {"name": f"made-{secrets.token_hex(4)}", "max_running_jobs": 1}
    elif body == NO_LIMIT_CHANGE:
        options["json"] = {"max_steps": None}
    elif body == NEW_KEY:
        options["json"] = {"project": "beta", "role": "viewer", "name": f"made by {caller.name}"}
    elif body == NEW_SECRET:
        options["json"] = {"name": MATRIX_SECRET, "value": secrets.token_urlsafe(16)}
    caller.http.cookies.clear()
    with caller.http.stream(method, url, params=params, headers=caller.headers(), **options) as response:
        # A live stream (a queued job's) would not end: its status and headers are the answer.
        live = response.headers.get("content-type", "").startswith("text/event-stream")
        text = "" if live else response.read().decode(errors="replace")
        return Answer(caller.name, op, url, response.status_code, response.headers, text)


def sweep(world: World, caller_name: str, objects: Objects) -> list[Answer]:
    """Every route of the matrix, sent by one caller on these objects."""
    caller = world.callers[caller_name]
    return [send(world, caller, op, objects) for op in matrix_routes(world)]


def server_errors(answers: list[Answer]) -> list[str]:
    return [f"a server error: {a}" for a in answers if a.status >= 500]


def report(problems: list[str]) -> str:
    return f"{len(problems)} answer(s) break the access rules:\n" + "\n".join(problems)


def test_every_documented_route_is_in_the_route_table(world: World) -> None:
    documented = set(documented_routes(world.schema))
    unreviewed = sorted(documented - ROUTE_TABLE.keys())
    assert not unreviewed, f"routes with no access check reviewed in {__name__}: add them to ROUTE_TABLE: {unreviewed}"
    stale = sorted(ROUTE_TABLE.keys() - documented)
    assert not stale, f"ROUTE_TABLE names routes the API no longer documents: {stale}"
    # The matrix sends each documented route and each undocumented one it knows of.
    assert set(matrix_routes(world)) == documented | set(NOT_IN_SCHEMA)
    assert {op for op in matrix_routes(world) if needs(op) == "open"} == {("GET", path) for path in OPEN_PATHS}, (
        "an open path the API does not serve, or one served with another method"
    )


@pytest.mark.parametrize("caller_name", [NO_KEY, BAD_KEY, REVOKED_KEY])
def test_a_request_without_a_valid_key_is_a_401_bearer_challenge(world: World, caller_name: str) -> None:
    before, access_before = world.snapshot_of_alpha(), world.snapshot_of_access()
    answers = sweep(world, caller_name, world.alpha)
    problems = server_errors(answers)
    for answer in answers:
        if needs(answer.op) == "open":
            if answer.op[1] != "/login" and answer.status != 200:  # /login without a good key: its sign-in page
                problems.append(f"an open route refused: {answer}")
        elif answer.status != 401 or answer.headers.get("www-authenticate") != "Bearer":
            challenge = answer.headers.get("www-authenticate")
            problems.append(f"not a 401 with WWW-Authenticate: Bearer (got {challenge!r}): {answer}")
    assert not problems, report(problems)
    assert world.snapshot_of_alpha() == before, "a refused request changed alpha's jobs or files"
    assert world.snapshot_of_access() == access_before, "a refused request changed the projects or keys"


def test_a_viewer_reads_its_project_and_may_change_nothing(world: World) -> None:
    before, access_before = world.snapshot_of_alpha(), world.snapshot_of_access()
    answers = sweep(world, VIEWER, world.alpha)
    problems = server_errors(answers)
    for answer in answers:
        need = needs(answer.op)
        if need in ("member", "admin"):
            if answer.status != 403:
                problems.append(f"a viewer was not refused (403) what it may not do: {answer}")
        elif answer.op == DOWNLOAD:
            if (answer.status, answer.message) != (404, world.alpha.no_final_model()):
                problems.append(f"not told the queued job has no final model: {answer}")
        elif need == "viewer" and not 200 <= answer.status < 300:
            problems.append(f"a viewer could not read its project: {answer}")
    assert not problems, report(problems)
    assert world.snapshot_of_alpha() == before, "a viewer's refused request changed alpha's jobs or files"
    assert world.snapshot_of_access() == access_before, "a refused request changed the projects or keys"
    viewer = world.callers[VIEWER]
    assert world.alpha.job_id in viewer.ids("/v1/jobs") and world.beta.job_id not in viewer.ids("/v1/jobs")
    assert world.alpha.file_id in viewer.ids("/v1/files") and world.beta.file_id not in viewer.ids("/v1/files")


def test_another_projects_member_is_told_alphas_objects_do_not_exist(world: World) -> None:
    before, access_before = world.snapshot_of_alpha(), world.snapshot_of_access()
    answers = sweep(world, OTHER_MEMBER, world.alpha)
    problems = server_errors(answers)
    for answer in answers:
        if names_an_object(answer.op):
            # As for an id that does not exist: nothing says the object is there.
            if (answer.status, answer.message) != (404, world.alpha.not_found(answer.op)):
                problems.append(f"alpha's object not answered as absent: {answer}")
        elif needs(answer.op) == "admin":
            if answer.status != 403:
                problems.append(f"a member was not refused an admin's route: {answer}")
        elif answer.status >= 400:
            problems.append(f"a member was refused in its own project: {answer}")
        elif answer.op == ("GET", "/v1/jobs") and world.alpha.job_id in answer.body:
            problems.append(f"alpha's job is in beta's list: {answer}")
        elif answer.op == ("GET", "/v1/files") and world.alpha.file_id in answer.body:
            problems.append(f"alpha's file is in beta's list: {answer}")
    assert not problems, report(problems)
    assert world.snapshot_of_alpha() == before, "beta's requests changed alpha's jobs or files"
    assert world.snapshot_of_access() == access_before, "a refused request changed the projects or keys"
    other = world.callers[OTHER_MEMBER]
    jobs, uploaded = other.ids("/v1/jobs"), other.ids("/v1/files")
    assert world.beta.job_id in jobs and world.alpha.job_id not in jobs
    assert world.beta.file_id in uploaded and world.alpha.file_id not in uploaded


def test_a_member_works_on_its_own_projects_objects(world: World, fresh_alpha: Objects) -> None:
    answers = sweep(world, MEMBER, fresh_alpha)
    problems = server_errors(answers)
    for answer in answers:
        if needs(answer.op) == "admin":
            if answer.status != 403:
                problems.append(f"a member was not refused an admin's route: {answer}")
        elif answer.op == DOWNLOAD:
            if (answer.status, answer.message) != (404, fresh_alpha.no_final_model()):
                problems.append(f"not told the queued job has no final model: {answer}")
        elif answer.status >= 400:
            problems.append(f"a member could not work on its own project's objects: {answer}")
    assert not problems, report(problems)
    # Its pause, resume and cancel, then its delete, were done.
    member = world.callers[MEMBER]
    events = member.get(f"/v1/jobs/{fresh_alpha.job_id}/events").json()["data"]
    assert [e["data"]["status"] for e in events if e["kind"] == "status"] == ["queued", "paused", "queued", "cancelled"]
    assert member.get(f"/v1/files/{fresh_alpha.file_id}").status_code == 404


def test_an_admin_is_refused_nowhere(world: World, fresh_alpha: Objects) -> None:
    answers = sweep(world, ADMIN, fresh_alpha)
    problems = server_errors(answers)
    for answer in answers:
        if answer.op == DOWNLOAD:
            if (answer.status, answer.message) != (404, fresh_alpha.no_final_model()):
                problems.append(f"not told the queued job has no final model: {answer}")
        elif answer.status >= 400:
            problems.append(f"an admin was refused: {answer}")
    assert not problems, report(problems)
    admin = world.callers[ADMIN]
    assert {world.alpha.job_id, world.beta.job_id} <= admin.ids("/v1/jobs"), "an admin sees every project's jobs"
    assert {world.alpha.file_id, world.beta.file_id} <= admin.ids("/v1/files")
    # An admin reaches another project's objects too.
    assert admin.get(f"/v1/jobs/{world.beta.job_id}").status_code == 200
    assert admin.get(f"/v1/files/{world.beta.file_id}").status_code == 200


def test_metrics_are_for_admin_keys_only(world: World) -> None:
    refusals = {name: world.callers[name].get("/metrics") for name in (VIEWER, OTHER_MEMBER, MEMBER)}
    assert {name: answer.status_code for name, answer in refusals.items()} == {
        VIEWER: 403,
        OTHER_MEMBER: 403,
        MEMBER: 403,
    }
    for answer in refusals.values():  # the refusal says what would do
        assert "it needs an admin key" in answer.json()["error"]["message"], answer.text
    scraped = world.callers[ADMIN].get("/metrics")
    assert scraped.status_code == 200 and "grpo_jobs" in scraped.text


def test_a_key_revoked_while_in_use_stops_working_within_seconds(world: World) -> None:
    key = world.service.make_key("alpha", "viewer")
    caller = Caller(world.service, "viewer revoked later", key)
    try:
        assert caller.get("/v1/jobs").status_code == 200
        revoke(world.service, key)
        time.sleep(REMEMBER_SECONDS + 1)
        refused = caller.get("/v1/jobs")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    finally:
        caller.close()


def test_an_idempotency_key_replays_only_within_its_project(world: World) -> None:
    spec = job_spec(world.model, name="retried")
    first = world.callers[MEMBER].post("/v1/jobs", json=spec, headers={"Idempotency-Key": "shared-retry"})
    assert first.status_code == 201, first.text
    other = world.callers[OTHER_MEMBER].post("/v1/jobs", json=spec, headers={"Idempotency-Key": "shared-retry"})
    assert other.status_code == 201, other.text
    assert other.json()["id"] != first.json()["id"] and "Idempotent-Replayed" not in other.headers
    assert other.json()["id"] in world.callers[OTHER_MEMBER].ids("/v1/jobs")


def test_another_projects_job_is_no_page_cursor(world: World) -> None:
    answer = world.callers[OTHER_MEMBER].get("/v1/jobs", params={"after": world.alpha.job_id})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == f"job {world.alpha.job_id} (the `after` cursor) does not exist"


def test_a_request_without_a_key_is_refused_before_its_body_is_parsed(world: World) -> None:
    for caller_name in (NO_KEY, BAD_KEY):
        answer = world.callers[caller_name].post(
            "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 401, f"{caller_name}: {answer.status_code} {answer.text}"
