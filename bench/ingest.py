"""5. Ingest: metric points per second one job's writer stores (batched), beside a bare bulk INSERT of the same
rows in one transaction, on SQLite and Postgres; every point is counted back."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bench.common import Sizes, postgres_database
from bench.populate import TRL_STEP_KEYS
from shared.spec.job import JobSpec
from shared.store import jobs
from shared.store.db import Database, migrate
from shared.store.models import MetricPoint, utcnow
from shared.store.states import claim
from tests.specs import job_spec
from worker.metrics import MetricsWriter


def _metrics(step: int) -> dict[str, float]:
    return {key: step * 0.001 + index for index, key in enumerate(TRL_STEP_KEYS)}


def _running_job(database: Database) -> tuple[str, int]:
    """A job claimed by this benchmark: the writer's writes are fenced by the claim's attempt."""
    with database.session() as session:
        job_id = jobs.create_job(session, JobSpec.model_validate(job_spec("m"))).id
    with database.session() as session:
        attempt = claim(session, job_id, "bench", lease_seconds=3600)
    assert attempt is not None
    return job_id, attempt


def _count(database: Database, job_id: str) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).where(MetricPoint.job_id == job_id)) or 0)


def measure(url: str, points: int) -> dict[str, Any]:
    migrate(url)
    database = Database(url)
    try:
        job_id, attempt = _running_job(database)
        writer = MetricsWriter(database, job_id, attempt, flush_interval=0.1)
        started = time.perf_counter()
        for step in range(1, points + 1):
            writer.add(step, step / points, _metrics(step))
        writer.close()
        writer_seconds = time.perf_counter() - started
        stored = _count(database, job_id)

        baseline_job, _ = _running_job(database)
        rows = [
            {
                "job_id": baseline_job,
                "step": step,
                "epoch": step / points,
                "metrics": _metrics(step),
                "logged_at": utcnow(),
            }
            for step in range(1, points + 1)
        ]
        started = time.perf_counter()
        with database.session() as session:
            session.execute(insert(MetricPoint), rows)
        bulk_seconds = time.perf_counter() - started
        if stored != points or _count(database, baseline_job) != points:
            raise RuntimeError(f"points were lost: the writer stored {stored} of {points}")
    finally:
        database.dispose()
    return {
        "points": points,
        "writer_points_per_s": round(points / writer_seconds),
        "bulk_insert_points_per_s": round(points / bulk_seconds),
        "writer_to_bulk_ratio": round(bulk_seconds / writer_seconds, 3),
        "lost": points - stored,
    }


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    sqlite: AbstractContextManager[str] = nullcontext(f"sqlite:///{work / 'ingest.sqlite'}")
    results = {}
    for name, database in (("sqlite", sqlite), ("postgres", postgres_database())):
        with database as url:
            results[name] = measure(url, sizes.ingest_points)
    return results
