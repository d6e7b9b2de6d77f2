"""Leases, fencing and the reconciler's sweep, on SQLite and Postgres: a claim that lost its job writes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from shared.queue import make_celery
from shared.settings import Settings
from shared.store import jobs
from shared.store.checkpoints import record_checkpoint
from shared.store.db import Database
from shared.store.metrics import MetricRecord, discard_metrics_after, record_metrics
from shared.store.models import Job, utcnow
from shared.store.reads import read_events, read_metrics
from shared.store.states import JobStatus, LeaseLost, claim, expired_leases, renew_lease, request_action, transition
from tests.store import LEASE_SECONDS, new_job, running_job
from worker.execute import WorkerContext
from worker.reconcile import IDLE_GRACE_SECONDS, requeue_expired, resend_lost_messages


@pytest.fixture
def context(database: Database, tmp_path: Path) -> Iterator[WorkerContext]:
    """A worker's context on this database, with a real (embedded) broker that nothing consumes."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database.url, max_attempts=2, resend_after_seconds=5)
    yield WorkerContext(settings, database, make_celery(settings), "test-worker")


def expire(database: Database, job_id: str) -> None:
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def job_row(database: Database, job_id: str) -> Job:
    with database.session() as session:
        job = jobs.get_job(session, job_id)
    assert job is not None
    return job


def event_messages(database: Database, job_id: str) -> list[str]:
    with database.reading() as connection:
        return [json.loads(e)["message"] for e in read_events(connection, job_id, after_id=0, limit=100).items]


def test_a_claim_that_lost_its_lease_can_write_nothing(database: Database, context: WorkerContext) -> None:
    job_id, first = running_job(database, "worker-a")
    expire(database, job_id)
    requeue_expired(context)  # the sweep: worker-a is presumed lost
    with database.session() as session:
        second = claim(session, job_id, "worker-b", LEASE_SECONDS)
    assert (first, second) == (1, 2)

    record = [MetricRecord(1, 0.1, {"reward": 1.0}, utcnow())]
    with database.session() as session, pytest.raises(LeaseLost):
        record_metrics(session, job_id, first, record)
    with database.session() as session, pytest.raises(LeaseLost):
        record_checkpoint(session, job_id, first, name="checkpoint-1", step=1, path="/x", size_bytes=1)
    with database.session() as session, pytest.raises(LeaseLost):
        jobs.set_job_fields(session, job_id, first, total_steps=10)
    with database.session() as session:
        assert not renew_lease(session, job_id, first, LEASE_SECONDS).held
        assert not transition(session, job_id, JobStatus.SUCCEEDED, attempt=first)
    # The claim that holds the job writes as usual.
    with database.session() as session:
        record_metrics(session, job_id, second, record)
        assert renew_lease(session, job_id, second, LEASE_SECONDS).held
    job = job_row(database, job_id)
    assert (job.status, job.attempt, job.worker, job.latest_step, job.lost_attempts) == ("running", 2, "worker-b", 1, 1)


def test_an_expired_lease_requeues_the_job_until_max_attempts_then_fails_it(
    database: Database, context: WorkerContext
) -> None:
    job_id, _ = running_job(database, "worker-a")
    requeue_expired(context)
    assert job_row(database, job_id).status == "running"  # the lease still holds: nothing to do

    expire(database, job_id)
    requeue_expired(context)
    job = job_row(database, job_id)
    assert (job.status, job.lost_attempts, job.lease_expires_at) == ("queued", 1, None)
    assert job.dispatched_at is not None  # its message was sent again

    with database.session() as session:
        claim(session, job_id, "worker-b", LEASE_SECONDS)
    expire(database, job_id)
    requeue_expired(context)  # the second lost worker: max_attempts is 2
    job = job_row(database, job_id)
    assert job.status == "failed" and job.lost_attempts == 2
    assert job.error == (
        "gave up after losing its worker 2 times (GRPO_MAX_ATTEMPTS=2): "
        "attempt 2 on worker-b stopped renewing its lease"
    )


def test_only_an_idle_worker_resends_a_queued_jobs_lost_message(database: Database, context: WorkerContext) -> None:
    job_id = new_job(database)
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=utcnow() - timedelta(minutes=1)))

    context.idle_since = None  # busy: a message still in the queue would not have reached it
    resend_lost_messages(context)
    assert job_row(database, job_id).dispatched_at < utcnow() - timedelta(seconds=30)

    context.idle_since = time.monotonic() - IDLE_GRACE_SECONDS - 1
    resend_lost_messages(context)
    assert job_row(database, job_id).dispatched_at > utcnow() - timedelta(seconds=5)
    assert event_messages(database, job_id).count("message sent again: the broker had lost it") == 1
    resend_lost_messages(context)  # just sent: not again
    assert event_messages(database, job_id).count("message sent again: the broker had lost it") == 1


def test_a_pause_request_reaches_the_worker_through_the_lease(database: Database) -> None:
    job_id, attempt = running_job(database)
    with database.session() as session:
        assert request_action(session, job_id, "pause")
        lease = renew_lease(session, job_id, attempt, LEASE_SECONDS)
    assert (lease.held, lease.requested_action) == (True, "pause")
    with database.session() as session:
        assert transition(session, job_id, JobStatus.PAUSED, attempt=attempt)
    job = job_row(database, job_id)
    assert (job.status, job.requested_action, job.lease_expires_at) == ("paused", None, None)


def test_a_worker_that_renews_after_the_sweep_listed_it_keeps_its_job(database: Database) -> None:
    job_id, attempt = running_job(database)
    expire(database, job_id)
    now = utcnow()
    with database.session() as session:
        (listed,) = expired_leases(session, now)
    assert listed.job_id == job_id
    with database.session() as session:  # the worker was only slow: it renews before the sweep acts
        assert renew_lease(session, job_id, attempt, LEASE_SECONDS).held
    with database.session() as session:
        assert not transition(session, job_id, JobStatus.QUEUED, attempt=attempt, lease_expired_before=now)
    assert job_row(database, job_id).status == "running"


def test_a_lost_worker_whose_job_was_being_paused_leaves_it_paused(database: Database, context: WorkerContext) -> None:
    job_id, _ = running_job(database)
    with database.session() as session:
        assert request_action(session, job_id, "pause")
    expire(database, job_id)
    requeue_expired(context)
    job = job_row(database, job_id)
    assert (job.status, job.lost_attempts, job.requested_action) == ("paused", 1, None)


def test_a_running_job_without_a_lease_counts_as_expired(database: Database, context: WorkerContext) -> None:
    # Rows running before leases existed (migration 0002) have none: they must not stay running forever.
    job_id, _ = running_job(database)
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=None))
    requeue_expired(context)
    assert job_row(database, job_id).status == "queued"


def test_a_resume_rewinds_the_metrics_and_says_where_to(database: Database) -> None:
    job_id, first = running_job(database)
    with database.session() as session:
        record_metrics(
            session, job_id, first, [MetricRecord(s, None, {"reward": float(s)}, utcnow()) for s in range(1, 6)]
        )
    expire(database, job_id)
    with database.session() as session:
        assert transition(session, job_id, JobStatus.QUEUED, attempt=first)
        second = claim(session, job_id, "worker-b", LEASE_SECONDS)
    assert second == 2
    with database.session() as session:
        assert discard_metrics_after(session, job_id, second, 3) == 2
    job = job_row(database, job_id)
    assert (job.resumed_from_step, job.latest_step, job.latest_metrics) == (3, 3, {"reward": 3.0})
    with database.reading() as connection:
        steps = [json.loads(p)["step"] for p in read_metrics(connection, job_id, after_step=-1, limit=10).items]
    assert steps == [1, 2, 3]


def test_a_writer_frozen_inside_a_transaction_loses_it_and_the_row_lock_it_held(postgres_url: str) -> None:
    # A worker paused mid-write (SIGSTOP, a suspended VM) would hold its job's row lock for as long as it is
    # frozen, and the sweep taking the job over would wait on it: the server ends such a transaction instead.
    from shared.store.db import migrate

    migrate(postgres_url)
    frozen, sweeper = Database(postgres_url, idle_transaction_seconds=1), Database(postgres_url)
    try:
        job_id, _ = running_job(sweeper)
        stuck = frozen._sessions()
        stuck.execute(update(Job).where(Job.id == job_id).values(worker="frozen"))  # holds the row lock, then idles
        started = time.monotonic()
        with sweeper.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(worker="sweeper"))
        waited = time.monotonic() - started
        assert 0.5 < waited < 10, waited  # it waited for the lock, and got it once the server ended the other
        with pytest.raises(Exception, match="idle-in-transaction"):
            stuck.commit()
        stuck.close()
        with sweeper.session() as session:
            assert session.get(Job, job_id).worker == "sweeper"  # type: ignore[union-attr]
    finally:
        frozen.dispose()
        sweeper.dispose()
