"""Secrets in the store (SQLite and Postgres) and over HTTP to a real `grpo serve`: set, replaced, listed by name,
deleted, audited, scoped to their project, checked at submit, and decrypted for a job only from its own project."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from shared.access.projects import ensure_project
from shared.access.secrets import (
    SecretRefused,
    SecretUnavailable,
    delete_secret,
    job_environment,
    list_secrets,
    missing_secrets,
    secret_cipher,
    set_secret,
)
from shared.settings import Settings
from shared.store.db import Database
from shared.store.models import AuditEvent, Secret
from tests.callers import Caller, serve_for_module
from tests.processes import Service
from tests.specs import job_spec


def token() -> str:
    return "hf_" + secrets.token_urlsafe(24)


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database.url, secret_key=Fernet.generate_key().decode())


# --- The store --------------------------------------------------------------------------------------------------


def test_a_secret_is_set_replaced_listed_and_deleted_and_each_change_is_audited_without_its_value(
    database: Database, settings: Settings
) -> None:
    first, second = token(), token()
    cipher = secret_cipher(settings)
    with database.session() as session:
        ensure_project(session, "alpha")
        row, created = set_secret(session, cipher, "alpha", "HF_TOKEN", first, by="grpo_abcdefgh")
        assert created and (row.project, row.name, row.updated_by) == ("alpha", "HF_TOKEN", "grpo_abcdefgh")
    with database.session() as session:
        row, created = set_secret(session, cipher, "alpha", "HF_TOKEN", second, by="grpo_ijklmnop")
        assert not created and row.updated_by == "grpo_ijklmnop" and row.updated_at >= row.created_at
        assert [s.name for s in list_secrets(session, "alpha")] == ["HF_TOKEN"]
    with database.session() as session:
        assert job_environment(session, settings, "alpha", ["HF_TOKEN"]) == {"HF_TOKEN": second}
        delete_secret(session, "alpha", "HF_TOKEN", by="grpo_ijklmnop")
    with database.session() as session:
        assert list_secrets(session, "alpha") == []
        with pytest.raises(SecretRefused, match="project alpha has no secret 'HF_TOKEN'") as refused:
            delete_secret(session, "alpha", "HF_TOKEN")
        assert refused.value.reason == "missing"
        audit = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert [(a.actor, a.action, a.project, a.target) for a in audit[-3:]] == [
        ("grpo_abcdefgh", "secret.set", "alpha", "HF_TOKEN"),
        ("grpo_ijklmnop", "secret.set", "alpha", "HF_TOKEN"),
        ("grpo_ijklmnop", "secret.delete", "alpha", "HF_TOKEN"),
    ]
    assert [a.data for a in audit[-3:]] == [{"created": True}, {"created": False}, None]


def test_a_job_gets_its_own_projects_secret_never_another_projects_of_the_same_name(
    database: Database, settings: Settings
) -> None:
    alpha_value, beta_value = token(), token()
    cipher = secret_cipher(settings)
    with database.session() as session:
        for project in ("alpha", "beta", "gamma"):
            ensure_project(session, project)
        set_secret(session, cipher, "alpha", "HF_TOKEN", alpha_value)
        set_secret(session, cipher, "beta", "HF_TOKEN", beta_value)
    with database.session() as session:
        assert job_environment(session, settings, "beta", ["HF_TOKEN"]) == {"HF_TOKEN": beta_value}
        assert job_environment(session, settings, "alpha", ["HF_TOKEN"]) == {"HF_TOKEN": alpha_value}
        [problem] = missing_secrets(session, "gamma", ["HF_TOKEN"])
        assert problem.field == "secrets[0]"
        assert problem.message == (
            "secrets[0]: project gamma has no secret HF_TOKEN: set it with `grpo secrets set HF_TOKEN` (or "
            "POST /v1/secrets), or remove it from the spec"
        )
        with pytest.raises(SecretUnavailable, match="which project gamma no longer has"):
            job_environment(session, settings, "gamma", ["HF_TOKEN"])
        # Even a row moved to another project by hand does not decrypt as that project's.
        row = session.get(Secret, ("alpha", "HF_TOKEN"))
        assert row is not None
        session.add(
            Secret(
                project="gamma",
                name="HF_TOKEN",
                ciphertext=row.ciphertext,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    with database.session() as session, pytest.raises(SecretUnavailable, match="was not encrypted as that secret"):
        job_environment(session, settings, "gamma", ["HF_TOKEN"])


def test_a_worker_with_another_key_or_none_fails_the_job_naming_the_secret_and_the_setting(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    value = token()
    with database.session() as session:
        ensure_project(session, "alpha")
        set_secret(session, secret_cipher(settings), "alpha", "HF_TOKEN", value)
    other_key = Settings(
        data_dir=settings.data_dir, database_url=database.url, secret_key=Fernet.generate_key().decode()
    )
    no_key = Settings(data_dir=tmp_path / "elsewhere", database_url=database.url)
    with database.session() as session:
        with pytest.raises(SecretUnavailable) as wrong:
            job_environment(session, other_key, "alpha", ["HF_TOKEN"])
        with pytest.raises(SecretUnavailable) as missing_key:
            job_environment(session, no_key, "alpha", ["HF_TOKEN"])
    assert str(wrong.value).startswith(
        "secret HF_TOKEN of project alpha does not decrypt with this service's GRPO_SECRET_KEY"
    )
    assert str(missing_key.value).startswith(
        "the job needs secret(s) HF_TOKEN, and this worker cannot decrypt them: secrets are not set up on this "
        "service: it has no GRPO_SECRET_KEY"
    )
    assert value not in str(wrong.value) + str(missing_key.value)


# --- Over HTTP --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict[str, Caller]]]:
    with serve_for_module(tmp_path_factory, "secrets-api") as service:
        roles = {"member": ("alpha", "member"), "viewer": ("alpha", "viewer"), "admin": ("alpha", "admin")}
        roles["beta"] = ("beta", "member")
        callers = {name: Caller(service, name, service.make_key(*role)) for name, role in roles.items()}
        try:
            yield service, callers
        finally:
            for caller in callers.values():
                caller.close()


def test_a_member_sets_a_secret_that_no_answer_shows_again(api: tuple[Service, dict[str, Caller]]) -> None:
    _, callers = api
    member, viewer = callers["member"], callers["viewer"]
    value, replacement = token(), token()
    created = member.post("/v1/secrets", json={"name": "WANDB_API_KEY", "value": value})
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"project", "name", "created_at", "updated_at", "updated_by"}
    assert created.json()["project"] == "alpha" and created.json()["updated_by"] == member.key[:13]  # type: ignore[index]
    replaced = member.post("/v1/secrets", json={"name": "WANDB_API_KEY", "value": replacement})
    assert replaced.status_code == 200, replaced.text
    listed = viewer.get("/v1/secrets")
    assert listed.status_code == 200 and "WANDB_API_KEY" in [s["name"] for s in listed.json()["data"]]
    refused = viewer.post("/v1/secrets", json={"name": "WANDB_API_KEY", "value": token()})
    assert refused.status_code == 403 and "it needs a member key" in refused.json()["error"]["message"]
    for answer in (created, replaced, listed, refused):
        assert value not in answer.text and replacement not in answer.text
    assert member.delete("/v1/secrets/WANDB_API_KEY").json() == {
        "project": "alpha",
        "name": "WANDB_API_KEY",
        "deleted": True,
    }
    gone = member.delete("/v1/secrets/WANDB_API_KEY")
    assert gone.status_code == 404 and gone.json()["error"]["message"].startswith("project alpha has no secret")


def test_a_refused_name_is_a_422_saying_why_that_does_not_echo_the_value(
    api: tuple[Service, dict[str, Caller]],
) -> None:
    _, callers = api
    value = token()
    for name, why in (("LD_PRELOAD", "names starting with LD_"), ("hf_token", "name it as an environment variable")):
        answer = callers["member"].post("/v1/secrets", json={"name": name, "value": value})
        assert answer.status_code == 422 and why in answer.json()["error"]["message"], answer.text
        assert value not in answer.text
    extra = callers["member"].post("/v1/secrets", json={"name": "HF_TOKEN", "value": value, "secret": value})
    assert extra.status_code == 422 and value not in extra.text


def test_each_project_sees_its_own_secrets_and_only_an_admin_names_another(
    api: tuple[Service, dict[str, Caller]],
) -> None:
    _, callers = api
    assert callers["beta"].post("/v1/secrets", json={"name": "BETA_ONLY_TOKEN", "value": token()}).status_code == 201
    assert "BETA_ONLY_TOKEN" not in callers["member"].get("/v1/secrets").text
    assert "BETA_ONLY_TOKEN" in callers["beta"].get("/v1/secrets").text
    assert "BETA_ONLY_TOKEN" in callers["admin"].get("/v1/secrets", params={"project": "beta"}).text
    nosy = callers["member"].get("/v1/secrets", params={"project": "beta"})
    assert nosy.status_code == 403 and "leave out `project`" in nosy.json()["error"]["message"]
    assert callers["admin"].get("/v1/secrets", params={"project": "nowhere"}).status_code == 404
    admin_set = callers["admin"].post(
        "/v1/secrets", params={"project": "beta"}, json={"name": "ADMIN_SET_TOKEN", "value": token()}
    )
    assert admin_set.status_code == 201 and admin_set.json()["project"] == "beta"


def test_a_spec_naming_a_secret_its_project_lacks_is_a_422_even_where_another_project_has_it(
    api: tuple[Service, dict[str, Caller]],
) -> None:
    _, callers = api
    assert callers["member"].post("/v1/secrets", json={"name": "HF_TOKEN", "value": token()}).status_code in (200, 201)
    spec = job_spec("/models/tiny", secrets=["HF_TOKEN"])
    assert callers["member"].post("/v1/jobs", json=spec).status_code == 201
    refused = callers["beta"].post("/v1/jobs", json=spec)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["errors"] == [
        {
            "field": "secrets[0]",
            "message": "secrets[0]: project beta has no secret HF_TOKEN: set it with `grpo secrets set HF_TOKEN` (or "
            "POST /v1/secrets), or remove it from the spec",
        }
    ]


def test_a_service_without_a_key_answers_a_409_saying_how_to_make_one(api_only: Service) -> None:
    answer = api_only.http.post("/v1/secrets", json={"name": "HF_TOKEN", "value": token()})
    assert answer.status_code == 409, answer.text
    error = answer.json()["error"]
    assert error["type"] == "secrets_not_configured"
    assert "no GRPO_SECRET_KEY" in error["message"] and "`grpo secret-key` prints one" in error["message"]
    assert api_only.http.get("/v1/secrets").json() == {"data": []}  # listing needs no key
