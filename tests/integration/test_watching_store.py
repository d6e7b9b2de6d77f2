"""What watching reads and writes, on SQLite and PostgreSQL alike: samples kept per step and bounded, chart series
downsampled by the database, the stream's cursor across a resume, the counts /metrics serves, the worker
registry, and the schema the migrations build matching the models."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from shared.spec.job import JobSpec
from shared.store import jobs, samples, workers
from shared.store.db import Database
from shared.store.metrics import MetricRecord, discard_metrics_after, record_metrics
from shared.store.models import Base, Job, Worker, utcnow
from shared.store.reads import read_jobs
from shared.store.states import JobStatus, claim, transition
from shared.watching import series, telemetry
from shared.watching.stream import BadCursor, Cursor, poll
from tests.specs import job_spec
from tests.store import new_job, running_job


def _record(database: Database, job_id: str, attempt: int, steps: range, **extra: object) -> None:
    records = [
        MetricRecord(
            step,
            step / 10,
            {"reward": float(step), "rewards/len/mean": -float(step), "kl": None if step % 2 else 0.5},
            utcnow(),
            [
                {"prompt": f"p{step}", "completion": f"c{step}-{i}", "rewards": {"len": -1.0}, "advantage": 0.1 * i}
                for i in range(2)
            ],
        )
        for step in steps
    ]
    with database.session() as session:
        record_metrics(session, job_id, attempt, records, **extra)  # type: ignore[arg-type]


def _sample_steps(database: Database, job_id: str) -> list[int]:
    with database.reading() as connection:
        items, _ = samples.read_samples(connection, job_id, step=None, after_step=-1, limit=500)
    return sorted({json.loads(item)["step"] for item in items})


def test_samples_are_kept_for_the_newest_steps_and_replaced_when_a_step_is_logged_again(database: Database) -> None:
    job_id, attempt = running_job(database)
    _record(database, job_id, attempt, range(1, 11), keep_sample_steps=3)
    assert _sample_steps(database, job_id) == [8, 9, 10]

    with database.reading() as connection:
        items, has_more = samples.read_samples(connection, job_id, step=9, after_step=-1, limit=10)
        assert samples.latest_sampled_step(connection, job_id) == 10
    assert not has_more
    assert [json.loads(i) for i in items] == [
        {"step": 9, "index": 0, "prompt": "p9", "completion": "c9-0", "rewards": {"len": -1.0}, "advantage": 0.0},
        {"step": 9, "index": 1, "prompt": "p9", "completion": "c9-1", "rewards": {"len": -1.0}, "advantage": 0.1},
    ]
    # A step logged again (a resumed attempt) replaces its samples; it never adds to them.
    _record(database, job_id, attempt, range(10, 11), keep_sample_steps=3)
    with database.reading() as connection:
        items, _ = samples.read_samples(connection, job_id, step=10, after_step=-1, limit=10)
    assert len(items) == 2
    with database.session() as session:
        discard_metrics_after(session, job_id, attempt, 8)
    assert _sample_steps(database, job_id) == [8]


def test_points_ingested_counts_every_write(database: Database) -> None:
    job_id, attempt = running_job(database)
    _record(database, job_id, attempt, range(1, 6))
    _record(database, job_id, attempt, range(5, 8))  # step 5 again: counted again, stored once
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.points_ingested == 8


def test_series_are_downsampled_by_the_database_and_full_resolution_in_a_small_range(database: Database) -> None:
    job_id, attempt = running_job(database)
    _record(database, job_id, attempt, range(1, 101))
    keys = ["reward", "rewards/len/mean", "kl"]
    with database.reading() as connection:
        whole = series.read_series(connection, job_id, keys, max_points=10)
        zoomed = series.read_series(connection, job_id, keys, max_points=10, from_step=41, to_step=45)
        empty = series.read_series(connection, job_id, keys, max_points=10, from_step=500)
    assert (whole.points, whole.downsampled, whole.bucket_steps) == (100, True, 10)
    assert whole.steps == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91]
    assert whole.values["reward"] == pytest.approx([5.5 + 10 * i for i in range(10)])  # each bucket's mean
    assert whole.values["rewards/len/mean"] == pytest.approx([-5.5 - 10 * i for i in range(10)])
    assert whole.values["kl"] == pytest.approx([0.5] * 10)  # nulls (odd steps) are left out of the mean
    assert (zoomed.points, zoomed.downsampled) == (5, False)
    assert zoomed.steps == [41, 42, 43, 44, 45]
    assert zoomed.values["reward"] == [41.0, 42.0, 43.0, 44.0, 45.0]
    assert zoomed.values["kl"] == [None, 0.5, None, 0.5, None]
    assert (empty.points, empty.steps) == (0, [])


def test_chart_keys_are_the_charted_ones_the_job_logs() -> None:
    logged = {"loss": 1, "kl": 0, "reward": 1, "rewards/b/mean": 1, "rewards/a/mean": 1, "rewards/a/std": 1, "x": 2}
    assert series.chart_keys(logged) == ["reward", "kl", "rewards/a/mean", "rewards/b/mean", "loss"]
    assert series.chart_keys(None) == []


def _messages(
    database: Database, job_id: str, cursor: Cursor, state: object = None
) -> tuple[list[tuple[str, str]], object]:
    with database.reading() as connection:
        found = poll(connection, job_id, cursor, state)  # type: ignore[arg-type]
    return [(m.event, m.id) for m in found.messages], found


def test_the_stream_cursor_continues_after_what_was_seen_and_rewinds_after_a_resume(database: Database) -> None:
    job_id, attempt = running_job(database)
    _record(database, job_id, attempt, range(1, 6))
    cursor = Cursor()
    messages, found = _messages(database, job_id, cursor)
    kinds = [event for event, _ in messages]
    assert kinds[0] == "status" and kinds.count("metric") == 5 and "event" in kinds
    assert str(cursor) == messages[-1][1] == f"1.5.{cursor.event}"
    # Nothing new: nothing sent (the status did not change either).
    assert _messages(database, job_id, cursor, found.state)[0] == []

    # Reconnecting from the id of the third point sends the fourth and fifth, and nothing twice.
    third = next(mid for event, mid in messages if event == "metric" and mid.startswith("1.3."))
    again = Cursor.parse(third)
    resent, _ = _messages(database, job_id, again, found.state)
    assert [mid.split(".")[1] for event, mid in resent if event == "metric"] == ["4", "5"]

    # The worker is lost; attempt 2 resumes from the checkpoint at step 3 and logs 4 and 5 again.
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        assert transition(session, job_id, JobStatus.QUEUED, attempt=attempt)
        second = claim(session, job_id, "worker-2", 60)
        assert second == attempt + 1
        discard_metrics_after(session, job_id, second, 3)
    _record(database, job_id, second, range(4, 7))
    seen_event = cursor.event
    messages, _ = _messages(database, job_id, cursor, found.state)
    assert messages[0] == ("rewind", f"2.3.{seen_event}")
    assert [m for m in messages if m[0] == "status"]  # the attempt changed
    assert [mid.split(".")[1] for event, mid in messages if event == "metric"] == ["4", "5", "6"]
    assert str(cursor).startswith("2.6.")


def test_the_stream_ends_once_the_job_ended_and_everything_was_sent(database: Database) -> None:
    job_id, attempt = running_job(database)
    _record(database, job_id, attempt, range(1, 4))
    with database.session() as session:
        assert transition(session, job_id, JobStatus.SUCCEEDED, attempt=attempt)
    with database.reading() as connection:
        found = poll(connection, job_id, Cursor(), None)
    assert found.ended
    assert [m.event for m in found.messages].count("metric") == 3
    with pytest.raises(LookupError), database.reading() as connection:
        poll(connection, "job-missing", Cursor(), None)


@pytest.mark.parametrize("text", ["nonsense", "1.2", "a.b.c", "1.2.3.4"])
def test_a_cursor_this_service_did_not_write_is_refused_with_the_format(text: str) -> None:
    with pytest.raises(BadCursor, match=r"attempt\.step\.event"):
        Cursor.parse(text)


def test_service_counts_follow_the_jobs_and_workers(database: Database) -> None:
    with database.reading() as connection:
        before = telemetry.count_service(connection, alive_seconds=60)
    assert before.jobs_by_status == {s.value: 0 for s in JobStatus} and before.queue_count == 0
    new_job(database)
    job_id, attempt = running_job(database)
    _record(database, job_id, attempt, range(1, 4))
    with database.session() as session:
        workers.register(session, "w-1")
        workers.register(session, "w-2")
        workers.sign_off(session, "w-2")
        workers.register(session, "w-3")
        session.execute(update(Worker).where(Worker.name == "w-3").values(heartbeat_at=utcnow() - timedelta(hours=1)))
    with database.reading() as connection:
        after = telemetry.count_service(connection, alive_seconds=60)
        listed = {w["name"]: w for w in workers.list_workers(connection, 60)}
    assert after.jobs_by_status["queued"] == 1 and after.jobs_by_status["running"] == 1
    assert after.queue_count == 1  # one job was claimed: its wait is in the histogram
    assert after.queue_buckets[-1] == 1 and after.queue_sum >= 0
    assert after.points_ingested == 3
    assert after.workers_alive == 1
    assert {name: w["alive"] for name, w in listed.items()} == {"w-1": True, "w-2": False, "w-3": False}


def test_job_metadata_is_stored_and_filters_the_list(database: Database) -> None:
    labelled = JobSpec.model_validate(job_spec("m", metadata={"team": "nlp", "run": "a/1"}))
    with database.session() as session:
        nlp = jobs.create_job(session, labelled).id
        jobs.create_job(session, JobSpec.model_validate(job_spec("m", metadata={"team": "vision"})))
        jobs.create_job(session, JobSpec.model_validate(job_spec("m")))
    with database.reading() as connection:
        page = read_jobs(connection, limit=10, labels={"team": "nlp"})
        both = read_jobs(connection, limit=10, labels={"team": "nlp", "run": "a/1"})
        none = read_jobs(connection, limit=10, labels={"team": "nlp", "run": "b"})
        queued = read_jobs(connection, limit=10, status="queued")
    assert [json.loads(j)["id"] for j in page.items] == [nlp]
    assert json.loads(page.items[0])["metadata"] == {"team": "nlp", "run": "a/1"}
    assert [json.loads(j)["id"] for j in both.items] == [nlp]
    assert none.items == []
    assert len(queued.items) == 3


def test_the_migrations_build_exactly_the_schema_the_models_describe(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
