"""The schema (built by migrations), the state machine's conditional updates, and the store, on SQLite and Postgres."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from shared.store import jobs
from shared.store.db import Database, SchemaNotReady, current_revision, head_revision, migrate, require_schema
from shared.store.metrics import MetricRecord, record_metrics
from shared.store.models import Job, JobEvent, MetricPoint, utcnow
from shared.store.reads import read_events, read_job, read_jobs, read_metrics
from shared.store.states import JobStatus, claim, transition
from tests.store import LEASE_SECONDS, new_job, running_job


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
    with database.reading() as connection:
        events = [json.loads(e) for e in read_events(connection, job_id, after_id=0, limit=10).items]
    assert [(e["kind"], e["message"]) for e in events] == [("status", "job queued")]


def test_only_one_of_two_racing_workers_claims_a_job(database: Database) -> None:
    job_id = new_job(database)
    barrier = threading.Barrier(8)
    results: list[int | None] = []

    def race(name: str) -> None:
        barrier.wait()
        with database.session() as session:
            results.append(claim(session, job_id, name, LEASE_SECONDS))

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
        attempt = claim(session, job_id, "w", LEASE_SECONDS)
        assert attempt == 1
        assert claim(session, job_id, "other", LEASE_SECONDS) is None
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
    job_id, attempt = running_job(database)
    now = utcnow()
    with database.session() as session:
        record_metrics(
            session, job_id, attempt, [MetricRecord(s, s / 10, {"reward": float(s)}, now) for s in (3, 1, 2)]
        )
    with database.session() as session:
        # A re-sent step replaces the first one, never duplicates it; NaN becomes null.
        record_metrics(
            session,
            job_id,
            attempt,
            [MetricRecord(2, 0.2, {"reward": 20.0, "kl": float("nan")}, now + timedelta(seconds=1))],
        )
    with database.reading() as connection:
        first = read_metrics(connection, job_id, after_step=-1, limit=2)
        last_step = json.loads(first.items[-1])["step"]
        rest = read_metrics(connection, job_id, after_step=last_step, limit=2)
    with database.session() as session:
        count = len(list(session.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id))))
        job = jobs.get_job(session, job_id)
        assert job is not None
        latest = (job.latest_step, job.latest_metrics)
    points = [json.loads(p) for p in first.items]
    assert [(p["step"], p["metrics"]) for p in points] == [(1, {"reward": 1.0}), (2, {"reward": 20.0, "kl": None})]
    assert first.has_more and not rest.has_more
    assert [json.loads(p)["step"] for p in rest.items] == [3]
    assert count == 3
    assert latest == (2, {"reward": 20.0, "kl": None})  # the last write


def test_jobs_list_newest_first_with_a_cursor(database: Database) -> None:
    ids = [new_job(database) for _ in range(5)]
    with database.reading() as connection:
        first = read_jobs(connection, limit=2)
        second = read_jobs(connection, limit=2, after=json.loads(first.items[-1])["id"])
        third = read_jobs(connection, limit=2, after=json.loads(second.items[-1])["id"])
        with pytest.raises(LookupError):
            read_jobs(connection, limit=2, after="job-unknown")
    listed = [json.loads(j)["id"] for j in first.items + second.items + third.items]
    assert listed == list(reversed(ids))
    assert first.has_more and second.has_more and not third.has_more


def test_status_is_not_set_outside_the_state_machine(database: Database) -> None:
    job_id = new_job(database)
    with database.session() as session, pytest.raises(ValueError, match=r"shared\.states"):
        jobs.set_job_fields(session, job_id, 1, status="succeeded")
    with database.session() as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == "queued"


def test_the_json_the_database_writes_matches_the_documented_response_models(database: Database) -> None:
    from api.schemas import EventOut, JobOut, MetricPointOut

    job_id = new_job(database)
    with database.session() as session:
        claim(session, job_id, "w", LEASE_SECONDS)
    with database.session() as session:
        record_metrics(session, job_id, 1, [MetricRecord(1, 0.5, {"reward": 1.5, "kl": 0.01}, utcnow())])
        transition(session, job_id, JobStatus.FAILED, error='bad "quotes" and \\ backslash', summary={"x": [1, 2]})
    with database.reading() as connection:
        job = JobOut.model_validate_json(read_job(connection, job_id) or "")
        (point,) = [
            MetricPointOut.model_validate_json(p)
            for p in read_metrics(connection, job_id, after_step=-1, limit=10).items
        ]
        events = [EventOut.model_validate_json(e) for e in read_events(connection, job_id, after_id=0, limit=10).items]
        listed = [JobOut.model_validate_json(j) for j in read_jobs(connection, limit=10).items]
    assert (job.status, job.error, job.model, job.summary, job.attempt) == (
        "failed",
        'bad "quotes" and \\ backslash',
        "m",
        {"x": [1, 2]},
        1,
    )
    assert job.latest_metrics == {"reward": 1.5, "kl": 0.01} and job.latest_step == 1
    assert job.spec["model"] == "m" and job.started_at is not None and job.finished_at is not None
    assert job.created_at.tzinfo is not None and job.created_at <= job.started_at <= job.finished_at
    assert (point.step, point.epoch, point.metrics) == (1, 0.5, {"reward": 1.5, "kl": 0.01})
    assert [e.data["status"] for e in events if e.kind == "status" and e.data] == ["queued", "running", "failed"]
    assert [j.id for j in listed] == [job_id]
