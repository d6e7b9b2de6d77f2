"""What operators watch, counted by the database at scrape time (the database is the truth; several API processes
serving /metrics then agree, and nothing is lost when one restarts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, case, func, select

from shared.store import workers
from shared.store.models import Job
from shared.store.states import JobStatus

# Upper bounds (seconds) of the submit-to-running histogram's buckets.
QUEUE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass
class ServiceCounts:
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    # Cumulative counts of first claims at most each bound of QUEUE_BUCKETS, then all of them, and their sum.
    queue_buckets: list[int] = field(default_factory=list)
    queue_count: int = 0
    queue_sum: float = 0.0
    points_ingested: int = 0
    workers_alive: int = 0


def count_service(connection: Connection, alive_seconds: float) -> ServiceCounts:
    """Jobs by status, submit-to-running times, metric points ingested and workers alive."""
    counts = ServiceCounts(jobs_by_status={status.value: 0 for status in JobStatus})
    for status, count in connection.execute(select(Job.status, func.count()).group_by(Job.status)):
        counts.jobs_by_status[status] = count
    waited = Job.queued_seconds
    buckets = [func.coalesce(func.sum(case((waited <= bound, 1), else_=0)), 0) for bound in QUEUE_BUCKETS]
    row = connection.execute(
        select(
            func.count(waited),
            func.coalesce(func.sum(waited), 0.0),
            func.coalesce(func.sum(Job.points_ingested), 0),
            *buckets,
        )
    ).one()
    counts.queue_count, counts.queue_sum, counts.points_ingested = int(row[0]), float(row[1]), int(row[2])
    counts.queue_buckets = [int(value) for value in row[3:]]
    counts.workers_alive = workers.count_alive(connection, alive_seconds)
    return counts
