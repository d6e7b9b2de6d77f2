"""The worker's metrics writer: batched, merged per step, nothing lost, failures surfaced."""

from __future__ import annotations

import json
import time

import pytest

from shared.store.db import Database
from shared.store.reads import read_metrics
from tests.store import running_job
from worker.metrics import MetricsWriter, MetricsWriterFailed


def stored(database: Database, job_id: str) -> list[tuple[int, float | None, dict]]:  # type: ignore[type-arg]
    with database.reading() as connection:
        page = read_metrics(connection, job_id, after_step=-1, limit=1_000_000)
    points = [json.loads(item) for item in page.items]
    return [(p["step"], p["epoch"], p["metrics"]) for p in points]


def test_every_logged_step_is_stored_once_after_close(database: Database) -> None:
    job_id, attempt = running_job(database)
    writer = MetricsWriter(database, job_id, attempt, flush_interval=0.05)
    for step in range(1, 501):
        writer.add(step, step / 100, {"reward": float(step), "kl": 0.01})
    writer.close()
    points = stored(database, job_id)
    assert [p[0] for p in points] == list(range(1, 501))
    assert points[41] == (42, 0.42, {"reward": 42.0, "kl": 0.01})


def test_a_second_log_at_the_same_step_is_merged_into_it(database: Database) -> None:
    # TRL logs eval metrics at the step of the train metrics: one point holds both.
    job_id, attempt = running_job(database)
    writer = MetricsWriter(database, job_id, attempt, flush_interval=0.01)
    writer.add(5, 0.5, {"reward": 1.0})
    time.sleep(0.2)  # the first log is written before the second arrives
    writer.add(5, None, {"eval_reward": 2.0})
    writer.close()
    assert stored(database, job_id) == [(5, 0.5, {"reward": 1.0, "eval_reward": 2.0})]


def test_points_become_visible_while_training_runs(database: Database) -> None:
    job_id, attempt = running_job(database)
    writer = MetricsWriter(database, job_id, attempt, flush_interval=0.05)
    writer.add(1, 0.1, {"reward": 1.0})
    deadline = time.monotonic() + 5
    while not stored(database, job_id):
        assert time.monotonic() < deadline, "a logged step was not written within 5 s"
        time.sleep(0.02)
    writer.close()


def test_a_database_that_keeps_failing_stops_training_with_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = Database(f"sqlite:///{tmp_path / 'no-schema.sqlite'}")  # no tables: every write fails
    writer = MetricsWriter(broken, "job-x", 1, flush_interval=0.01, retry_for=0.3)
    writer.add(1, 0.1, {"reward": 1.0})
    with pytest.raises(MetricsWriterFailed, match="could not store metrics"):
        writer.close()
    with pytest.raises(MetricsWriterFailed):
        writer.add(2, 0.2, {"reward": 1.0})
    broken.dispose()


def test_a_batch_larger_than_one_statement_can_carry_is_stored(database: Database) -> None:
    # 60,000 steps gathered into one flush: 300,000 values, beyond what one statement may bind (Postgres 65,535;
    # this SQLite 250,000, SQLite's own default build 32,766).
    job_id, attempt = running_job(database)
    writer = MetricsWriter(database, job_id, attempt, flush_interval=60)
    for step in range(1, 60_001):
        writer.add(step, None, {"reward": 1.0})
    writer.close()
    assert [p[0] for p in stored(database, job_id)] == list(range(1, 60_001))
