"""The schema (built by migrations), the state machine's conditional updates, and the store, on SQLite and Postgres."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from shared import jobs
from shared.db import Database, SchemaNotReady, current_revision, head_revision, migrate, require_schema
from shared.jobs import MetricRecord
from shared.models import Job, JobEvent, MetricPoint, utcnow
from shared.spec import JobSpec
from shared.states import JobStatus, claim, transition
from tests.specs import job_spec


def new_job(database: Database) -> str:
    with database.session() as session:
        return jobs.create_job(session, JobSpec.model_validate(job_spec("m"))).id


def test_migrations_build_the_schema_from_empty(database_url: str) -> None:
    with pytest.raises(SchemaNotReady, match="run `grpo migrate`"):
        require_schema(database_url)
    assert current_revision(database_url) is None
    assert migrate(database_url) == head_revision()
    require_schema(database_url)
    assert migrate(database_url) == head_revision()  # running again changes nothing
    db = Database(database_url)
    tables = set(inspect(db.engine).get_table_names())
    db.dispose()
    assert {"jobs", "metric_points", "job_events", "alembic_version"} <= tables


def test_a_new_job_is_queued_with_an_event(database: Database) -> None:
    job_id = new_job(database)
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.status == "queued" and job.attempt == 0
        assert job.spec["model"] == "m"
        assert job.created_at.tzinfo is not None
        events = jobs.list_events(session, job_id, after_id=0, limit=10).items
    assert [(e.kind, e.message) for e in events] == [("status", "job queued")]


def test_only_one_of_two_racing_workers_claims_a_job(database: Database) -> None:
    job_id = new_job(database)
    barrier = threading.Barrier(8)
    results: list[int | None] = []

    def race(name: str) -> None:
        barrier.wait()
        with database.session() as session:
            results.append(claim(session, job_id, name))

    threads = [threading.Thread(target=race, args=(f"worker-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=lambda r: r or 0) == [None] * 7 + [1]
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.status == "running" and job.attempt == 1


def test_transitions_follow_the_state_machine_and_are_fenced_by_attempt(database: Database) -> None:
    job_id = new_job(database)
    with database.session() as session:
        assert not transition(session, job_id, JobStatus.SUCCEEDED)  # queued cannot succeed
        attempt = claim(session, job_id, "w")
        assert attempt == 1
        assert claim(session, job_id, "other") is None
        assert not transition(session, job_id, JobStatus.SUCCEEDED, attempt=2)  # not this claim's job
        assert transition(session, job_id, JobStatus.SUCCEEDED, attempt=1, summary={"train_loss": 0.5})
        assert not transition(session, job_id, JobStatus.FAILED, attempt=1, error="late")  # over is over
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        assert (job.status, job.error, job.summary) == ("succeeded", None, {"train_loss": 0.5})
        assert job.finished_at is not None and job.started_at is not None
        statuses = [
            e.data["status"]
            for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))
            if e.kind == "status"
        ]
    assert statuses == ["queued", "running", "succeeded"]


def test_metric_points_are_unique_per_step_and_paged_in_order(database: Database) -> None:
    job_id = new_job(database)
    now = utcnow()
    with database.session() as session:
        jobs.record_metrics(session, job_id, [MetricRecord(s, s / 10, {"reward": float(s)}, now) for s in (3, 1, 2)])
    with database.session() as session:
        # A re-sent step replaces the first one, never duplicates it; NaN becomes null.
        jobs.record_metrics(
            session, job_id, [MetricRecord(2, 0.2, {"reward": 20.0, "kl": float("nan")}, now + timedelta(seconds=1))]
        )
    with database.session() as session:
        first = jobs.list_metrics(session, job_id, after_step=-1, limit=2)
        rest = jobs.list_metrics(session, job_id, after_step=first.items[-1].step, limit=2)
        count = len(list(session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id))))
        job = jobs.get_job(session, job_id)
        assert job is not None
        latest = (job.latest_step, job.latest_metrics)
    assert [(p.step, p.metrics) for p in first.items] == [(1, {"reward": 1.0}), (2, {"reward": 20.0, "kl": None})]
    assert first.has_more and not rest.has_more
    assert [p.step for p in rest.items] == [3]
    assert count == 3
    assert latest == (2, {"reward": 20.0, "kl": None})  # the last write


def test_jobs_list_newest_first_with_a_cursor(database: Database) -> None:
    ids = [new_job(database) for _ in range(5)]
    with database.session() as session:
        first = jobs.list_jobs(session, limit=2)
        second = jobs.list_jobs(session, limit=2, after=first.items[-1].id)
        third = jobs.list_jobs(session, limit=2, after=second.items[-1].id)
        with pytest.raises(LookupError):
            jobs.list_jobs(session, limit=2, after="job-unknown")
    listed = [j.id for j in first.items + second.items + third.items]
    assert listed == list(reversed(ids))
    assert first.has_more and second.has_more and not third.has_more


def test_status_is_not_set_outside_the_state_machine(database: Database) -> None:
    job_id = new_job(database)
    with database.session() as session, pytest.raises(ValueError, match=r"shared\.states"):
        jobs.set_job_fields(session, job_id, status="succeeded")
    with database.session() as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == "queued"
