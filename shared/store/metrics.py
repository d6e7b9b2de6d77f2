"""Metric ingestion: what the trainer logged at each step, written by the claim that owns the job (fenced), and the
rewind of a resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.store import samples
from shared.store.json_sql import json_safe
from shared.store.models import Job, MetricPoint
from shared.store.states import fence


@dataclass
class MetricRecord:
    """What the trainer logged at one step, as the worker hands it to the store."""

    step: int
    epoch: float | None
    metrics: dict[str, Any]
    logged_at: datetime
    # A few of the step's completions (see shared/store/samples.py), when the trainer had some to show.
    samples: list[dict[str, Any]] | None = None


@lru_cache
def _upsert_metrics_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(MetricPoint)
    return statement.on_conflict_do_update(
        index_elements=[MetricPoint.job_id, MetricPoint.step],
        set_={
            "epoch": statement.excluded.epoch,
            "metrics": statement.excluded.metrics,
            "logged_at": statement.excluded.logged_at,
        },
    )


def record_metrics(
    session: Session, job_id: str, attempt: int, records: list[MetricRecord], keep_sample_steps: int = 200
) -> None:
    """Upsert metric points (a re-sent step replaces, never duplicates), their samples (the newest
    `keep_sample_steps` steps' are kept) and the job's latest step.

    Fenced: raises LeaseLost, writing nothing, when `attempt` no longer owns the job.
    """
    if not records:
        return
    rows = [
        {
            "job_id": job_id,
            "step": r.step,
            "epoch": json_safe(r.epoch),
            "metrics": json_safe(r.metrics),
            "logged_at": r.logged_at,
        }
        for r in records
    ]
    latest = max(rows, key=lambda row: row["step"])
    fence(
        session,
        job_id,
        attempt,
        latest_step=latest["step"],
        latest_metrics=latest["metrics"],
        points_ingested=Job.points_ingested + len(rows),
    )
    # One statement, compiled once, executed for all rows (batched by the driver): no per-batch SQL to build,
    # and no limit on how many rows a batch may hold.
    session.execute(_upsert_metrics_statement(session.get_bind().dialect.name), rows)
    by_step = {r.step: json_safe(r.samples) for r in records if r.samples}
    samples.store_samples(session, job_id, by_step, keep_sample_steps)


def discard_metrics_after(session: Session, job_id: str, attempt: int, step: int) -> int:
    """Delete the points past `step` (a resumed run logs them again) and note the rewind on the job; fenced."""
    latest = session.execute(
        select(MetricPoint.step, MetricPoint.metrics)
        .where(MetricPoint.job_id == job_id, MetricPoint.step <= step)
        .order_by(MetricPoint.step.desc())
        .limit(1)
    ).first()
    fence(
        session,
        job_id,
        attempt,
        resumed_from_step=step,
        latest_step=latest.step if latest else None,
        latest_metrics=latest.metrics if latest else None,
    )
    result = session.execute(delete(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > step))
    samples.discard_samples_after(session, job_id, step)
    return int(getattr(result, "rowcount", 0) or 0)
