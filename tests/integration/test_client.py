"""The `grpo` client against a real API: following a job's metrics across a resume."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from cli.client import Client
from shared.store.db import Database
from shared.store.metrics import MetricRecord, discard_metrics_after, record_metrics
from shared.store.models import Job, utcnow
from shared.store.states import JobStatus, claim, transition
from tests.processes import Service
from tests.store import LEASE_SECONDS


def record(database: Database, job_id: str, attempt: int, steps: range, value: float) -> None:
    with database.session() as session:
        record_metrics(session, job_id, attempt, [MetricRecord(s, None, {"reward": value}, utcnow()) for s in steps])


def test_follow_reads_the_steps_a_resume_logged_again(api_only: Service) -> None:
    database = Database(f"sqlite:///{Path(api_only.env['GRPO_DATA_DIR']) / 'grpo.sqlite'}")
    job_id = api_only.submit(
        {
            "model": "m",
            "train_dataset": {"rows": [{"prompt": "p"}]},
            "reward_funcs": [{"type": "builtin", "name": "length"}],
        }
    )["id"]
    with database.session() as session:
        first = claim(session, job_id, "worker-a", LEASE_SECONDS)
    assert first == 1
    record(database, job_id, first, range(1, 6), 1.0)

    client = Client(api_only.url, key=api_only.key)
    followed: Iterator[dict] = client.follow(job_id, interval=0.05)  # type: ignore[type-arg]
    seen = [(next(followed)["step"]) for _ in range(5)]
    assert seen == [1, 2, 3, 4, 5]

    # Worker a is lost after step 5; worker b resumes from a checkpoint at step 3 and logs 4 to 6 again.
    with database.session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        transition(session, job_id, JobStatus.QUEUED, attempt=first)
        second = claim(session, job_id, "worker-b", LEASE_SECONDS)
    assert second == 2
    with database.session() as session:
        discard_metrics_after(session, job_id, second, 3)
    record(database, job_id, second, range(4, 7), 2.0)
    with database.session() as session:
        transition(session, job_id, JobStatus.SUCCEEDED, attempt=second)

    rest = [(point["step"], point["metrics"]["reward"]) for point in followed]
    assert rest == [(4, 2.0), (5, 2.0), (6, 2.0)]
    client.close()
    database.dispose()
