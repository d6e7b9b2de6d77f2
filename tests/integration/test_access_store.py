"""Projects and API keys in the store, on SQLite and PostgreSQL: keys random, kept only as a digest, listed by
prefix, revocable, noting when they were last used."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from shared.access.keys import (
    LAST_USED_RESOLUTION,
    KeyRefused,
    Role,
    authenticate,
    create_key,
    list_keys,
    revoke_key,
)
from shared.access.projects import ProjectLimits, ProjectRefused, create_project, list_projects, update_project
from shared.store.db import Database
from shared.store.models import ApiKey, utcnow


def test_a_key_is_random_shown_once_and_stored_only_as_a_digest(database: Database) -> None:
    with database.session() as session:
        create_project(session, "research")
        row, key = create_key(session, "research", Role.MEMBER, "ci")
        _, other = create_key(session, "research", Role.MEMBER)
    assert re.fullmatch(r"grpo_[A-Za-z0-9_-]{43}", key)  # 32 random bytes
    assert key != other and row.prefix == key[:13]
    with database.reading() as connection:
        stored = [
            str(value) for row_values in connection.execute(text("SELECT * FROM api_keys")) for value in row_values
        ]
    secret_part = key[13:]
    assert not any(secret_part in value or secret_part[:16] in value for value in stored), stored


def test_a_key_authenticates_as_its_project_and_role_until_it_is_revoked(database: Database) -> None:
    with database.session() as session:
        create_project(session, "research")
        row, key = create_key(session, "research", Role.VIEWER)
    with database.session() as session:
        identity = authenticate(session, key)
    assert identity is not None
    assert (identity.key_prefix, identity.project, identity.role) == (row.prefix, "research", Role.VIEWER)
    with database.session() as session:
        assert authenticate(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # its prefix, wrong key
        assert authenticate(session, "grpo_" + "x" * 43) is None
        assert authenticate(session, "Bearer " + key) is None
        assert authenticate(session, "") is None
        revoke_key(session, row.prefix)
    with database.session() as session:
        assert authenticate(session, key) is None
        assert list_keys(session)[0].revoked_at is not None


def test_last_used_is_written_once_a_minute_not_on_every_request(database: Database) -> None:
    with database.session() as session:
        create_project(session, "research")
        row, key = create_key(session, "research", Role.MEMBER)
    start = utcnow()
    with database.session() as session:
        authenticate(session, key, now=start)
    with database.session() as session:
        authenticate(session, key, now=start + timedelta(seconds=5))
    with database.session() as session:
        assert session.scalar(select(ApiKey.last_used_at).where(ApiKey.prefix == row.prefix)) == start
    later = start + LAST_USED_RESOLUTION + timedelta(seconds=1)
    with database.session() as session:
        authenticate(session, key, now=later)
    with database.session() as session:
        assert session.scalar(select(ApiKey.last_used_at).where(ApiKey.prefix == row.prefix)) == later


def test_projects_keep_their_limits_and_refuse_what_cannot_be(database: Database) -> None:
    with database.session() as session:
        create_project(session, "research", ProjectLimits(max_running_jobs=2, max_steps=1000))
        create_project(session, "alpha")
        update_project(session, "research", {"max_gpus": 4, "max_steps": None})
    with database.session() as session:
        projects = {p.name: p for p in list_projects(session)}
        assert list(projects) == ["alpha", "default", "research"]  # `default`: the migration's, for older jobs
        research = projects["research"]
        assert (research.max_running_jobs, research.max_queued_jobs, research.max_gpus, research.max_steps) == (
            2,
            None,
            4,
            None,
        )
    refusals = [
        (lambda s: create_project(s, "research"), "exists already"),
        (lambda s: create_project(s, "bad name"), "not valid"),
        (lambda s: create_project(s, "x", ProjectLimits(max_gpus=-1)), "must be 0 or more"),
        (lambda s: update_project(s, "nobody", {"max_gpus": 1}), "there is no project 'nobody'"),
        (lambda s: update_project(s, "research", {"max_cpus": 1}), "unknown limit"),
        (lambda s: create_key(s, "nobody", Role.ADMIN), "there is no project 'nobody'"),
        (lambda s: revoke_key(s, "grpo_nothing1"), "there is no key"),
    ]
    for attempt, message in refusals:
        with pytest.raises((ProjectRefused, KeyRefused), match=message), database.session() as session:
            attempt(session)
    with database.session() as session:  # nothing a refusal touched was lost
        assert [p.name for p in list_projects(session)] == ["alpha", "default", "research"]


def test_another_projects_job_is_no_list_cursor_even_with_older_jobs_of_ones_own(database: Database) -> None:
    from shared.spec.job import JobSpec
    from shared.store.jobs import create_job
    from shared.store.reads import read_jobs
    from tests.specs import job_spec

    spec = JobSpec.model_validate(job_spec("/models/tiny"))
    with database.session() as session:
        create_project(session, "alpha")
        create_project(session, "beta")
        create_job(session, spec, project="beta")  # older than alpha's: a page after alpha's job would hold it
        alphas = create_job(session, spec, project="alpha").id
    with database.reading() as connection:
        assert len(read_jobs(connection, limit=10, after=alphas).items) == 1  # an admin's cursor: every project
        with pytest.raises(LookupError):
            read_jobs(connection, limit=10, after=alphas, project="beta")
