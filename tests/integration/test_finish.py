"""Recording how a run ended never leaves a job `running` because of what the run produced."""

from __future__ import annotations

import json

from shared.store import jobs
from shared.store.db import Database
from shared.store.reads import read_events
from tests.store import running_job
from worker.execute import _finish
from worker.protocol import Outcome


def test_a_summary_with_nan_is_stored_with_null(database: Database) -> None:
    job_id, attempt = running_job(database)
    _finish(database, job_id, attempt, Outcome(True, summary={"train_loss": float("nan"), "x": [1.0]}))
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        assert (job.status, job.summary) == ("succeeded", {"train_loss": None, "x": [1.0]})


def test_an_error_with_nul_characters_is_stored_without_them(database: Database) -> None:
    job_id, attempt = running_job(database)
    _finish(database, job_id, attempt, Outcome.failed("bad \x00byte", "Traceback \x00(most recent call last)"))
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and (job.status, job.error) == ("failed", "bad byte")
    with database.reading() as connection:
        events = [json.loads(e) for e in read_events(connection, job_id, after_id=0, limit=10).items]
    (error_event,) = [e for e in events if e["kind"] == "error"]
    assert error_event["data"] == {"traceback": "Traceback (most recent call last)"}


def test_a_result_for_a_claim_that_lost_the_job_is_not_recorded(database: Database) -> None:
    job_id, attempt = running_job(database)
    _finish(database, job_id, attempt + 1, Outcome.failed("from a stale claim"))
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and (job.status, job.error) == ("running", None)


def test_an_error_with_undecodable_characters_is_stored(database: Database) -> None:
    # A file name that was not valid UTF-8 reaches Python as lone surrogates, which no database text holds.
    job_id, attempt = running_job(database)
    _finish(database, job_id, attempt, Outcome.failed("loading train_dataset: no such file: caf\udce9.jsonl"))
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None
        assert (job.status, job.error) == ("failed", "loading train_dataset: no such file: caf\\udce9.jsonl")


def test_a_very_long_error_is_cut_short_for_people(database: Database) -> None:
    job_id, attempt = running_job(database)
    _finish(database, job_id, attempt, Outcome.failed("x" * 100_000, "Traceback: " + "x" * 100_000))
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        assert job is not None and job.error is not None
        assert len(job.error) == 2000 and job.error.endswith("(cut short; see the job's events)")
