"""The audit log over HTTP to one real `grpo serve` (embedded SQLite, no worker): each change a person makes to keys,
projects and their limits, and files is an entry naming the key by its prefix (never the key), or `cli:<user>` when
it was made with the `grpo` command; only an admin reads it; a job's own changes are its events, naming the key."""

from __future__ import annotations

import getpass
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.callers import PROMPTS_JSONL, Caller, prefix, serve_for_module
from tests.processes import Service
from tests.specs import job_spec


@dataclass
class World:
    service: Service
    admin: Caller
    member: Caller
    viewer: Caller


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with serve_for_module(tmp_path_factory, "audit") as service:
        callers = World(
            service,
            Caller(service, "admin", service.key),
            Caller(service, "member", service.make_key("alpha", "member")),
            Caller(service, "viewer", service.make_key("alpha", "viewer")),
        )
        try:
            yield callers
        finally:
            for caller in (callers.admin, callers.member, callers.viewer):
                caller.close()


def audit(caller: Caller, **params: Any) -> list[dict[str, Any]]:
    response = caller.get("/v1/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


def grpo(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """A `grpo` command an operator runs on the service's machine, against its database."""
    env = {**service.env, "COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def summary(entries: list[dict[str, Any]]) -> list[tuple[str, str, str | None, dict[str, Any] | None]]:
    return [(e["action"], e["actor"], e["target"], e["data"]) for e in entries]


def test_each_change_made_through_rest_is_an_audit_entry_naming_the_key_by_prefix(world: World) -> None:
    admin, admin_key = world.admin, world.admin.key or ""
    assert admin.post("/v1/projects", json={"name": "audited", "max_running_jobs": 2}).status_code == 201
    patched = admin.request("PATCH", "/v1/projects/audited", json={"max_running_jobs": 3, "max_gpus": 1})
    assert patched.status_code == 200, patched.text
    made = admin.post("/v1/keys", json={"project": "audited", "role": "member", "name": "ci"})
    assert made.status_code == 201, made.text
    new_key = made.json()["key"]
    uploader = Caller(world.service, "audited member", new_key)
    try:
        file_id = uploader.upload()
        assert uploader.delete(f"/v1/files/{file_id}").status_code == 200
    finally:
        uploader.close()
    assert admin.post(f"/v1/keys/{prefix(new_key)}/revoke").status_code == 200

    answer = admin.get("/v1/audit", params={"project": "audited"})
    assert answer.status_code == 200, answer.text
    by_admin, by_member = prefix(admin_key), prefix(new_key)
    file_data = {"filename": "prompts.jsonl", "bytes": len(PROMPTS_JSONL)}
    assert summary(answer.json()["data"]) == [
        ("project.create", by_admin, "audited", {"max_running_jobs": 2}),
        (
            "project.update",
            by_admin,
            "audited",
            {"max_running_jobs": {"old": 2, "new": 3}, "max_gpus": {"old": None, "new": 1}},
        ),
        ("key.create", by_admin, by_member, {"role": "member", "name": "ci"}),
        ("file.upload", by_member, file_id, file_data),
        ("file.delete", by_member, file_id, file_data),
        ("key.revoke", by_admin, by_member, {"role": "member", "name": "ci"}),
    ]
    assert {e["project"] for e in answer.json()["data"]} == {"audited"}
    # Keys are named by their prefix only: neither key's secret part is anywhere in the log.
    whole_log = admin.get("/v1/audit", params={"limit": 1000}).text
    for key in (admin_key, new_key, world.member.key or "", world.viewer.key or ""):
        assert key[len(prefix(key)) :] not in whole_log


def test_changes_made_with_the_grpo_command_name_cli_and_the_user(world: World) -> None:
    grpo(world.service, "projects", "create", "by-hand", "--max-gpus", "2")
    grpo(world.service, "projects", "update", "by-hand", "--max-gpus", "none", "--max-steps", "100")
    key = grpo(world.service, "keys", "create", "--project", "by-hand", "--role", "viewer").stdout.strip()
    grpo(world.service, "keys", "revoke", prefix(key))

    user = f"cli:{getpass.getuser()}"
    assert summary(audit(world.admin, project="by-hand")) == [
        ("project.create", user, "by-hand", {"max_gpus": 2}),
        (
            "project.update",
            user,
            "by-hand",
            {"max_gpus": {"old": 2, "new": None}, "max_steps": {"old": None, "new": 100}},
        ),
        ("key.create", user, prefix(key), {"role": "viewer", "name": None}),
        ("key.revoke", user, prefix(key), {"role": "viewer", "name": None}),
    ]
    # `grpo audit` reads the same log from the database, the limits changed shown old -> new.
    shown = grpo(world.service, "audit", "--project", "by-hand").stdout
    for line in ("project.create", "max_gpus=2", "max_gpus 2 -> none", "max_steps none -> 100", "key.revoke"):
        assert line in shown, shown
    assert user in shown and key[len(prefix(key)) :] not in shown


def test_the_audit_log_pages_with_an_after_cursor_and_filters_by_project(world: World) -> None:
    admin = world.admin
    for name in ("paged-a", "paged-b", "paged-c"):
        assert admin.post("/v1/projects", json={"name": name}).status_code == 201
    everything = audit(admin)
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = admin.get("/v1/audit", params={"after": after, "limit": 2})
        assert page.status_code == 200, page.text
        seen += page.json()["data"]
        if not page.json()["has_more"]:
            break
        after = page.json()["data"][-1]["id"]
    assert seen == everything and [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    assert [e["target"] for e in audit(admin, project="paged-b")] == ["paged-b"]


def test_a_member_or_a_viewer_may_not_read_the_audit_log_and_a_refused_change_is_not_in_it(world: World) -> None:
    before = audit(world.admin)
    for caller in (world.member, world.viewer):
        answer = caller.get("/v1/audit")
        assert answer.status_code == 403, answer.text
        assert "it needs an admin key" in answer.json()["error"]["message"]
        assert caller.post("/v1/projects", json={"name": f"not-by-{caller.name}"}).status_code == 403
    assert audit(world.admin) == before


def test_each_job_event_a_person_causes_names_the_key_by_prefix(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    member, admin = world.member, world.admin
    model = tmp_path_factory.mktemp("models") / "tiny"  # never trained: no worker runs
    job_id = member.submit(job_spec(model, name="audited job"))
    assert member.post(f"/v1/jobs/{job_id}/pause").status_code == 200
    assert member.post(f"/v1/jobs/{job_id}/resume").status_code == 200
    assert admin.post(f"/v1/jobs/{job_id}/cancel").status_code == 200

    events = member.get(f"/v1/jobs/{job_id}/events").json()["data"]
    by_member, by_admin = prefix(member.key or ""), prefix(admin.key or "")
    assert [(e["data"]["status"], e["data"].get("by")) for e in events if e["kind"] == "status"] == [
        ("queued", by_member),
        ("paused", by_member),
        ("queued", by_member),
        ("cancelled", by_admin),
    ]
