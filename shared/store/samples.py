"""Sample completions: what the model wrote at a logged step, with each reward's score and the advantage.

The worker captures them from what TRL gathers anyway (see `worker/samples.py`) and stores them with the step's
metrics, in the same fenced transaction; a job keeps the samples of its newest `sample_steps_kept` steps.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from shared.store.json_sql import embedded_json, json_object
from shared.store.models import Sample

# Bounds of one page of GET /v1/jobs/{id}/samples.
MAX_PAGE = 500


def store_samples(session: Session, job_id: str, by_step: dict[int, list[dict[str, Any]]], keep_steps: int) -> None:
    """Replace the samples of each step given (a re-logged step replaces, never duplicates), then drop the oldest
    steps beyond `keep_steps`. The caller has fenced the write (see `shared.store.metrics.record_metrics`)."""
    if not by_step:
        return
    session.execute(delete(Sample).where(Sample.job_id == job_id, Sample.step.in_(list(by_step))))
    # One executemany of plain rows: the writer shares the training process's CPU, and ORM objects cost it.
    rows = [
        {
            "job_id": job_id,
            "step": step,
            "index": index,
            "prompt": sample.get("prompt"),
            "completion": sample.get("completion"),
            "rewards": sample.get("rewards") or {},
            "advantage": sample.get("advantage"),
        }
        for step, samples in by_step.items()
        for index, sample in enumerate(samples)
    ]
    session.execute(insert(Sample), rows)
    # The newest step beyond the kept ones (found on the primary key's order), then everything up to it goes. Two
    # statements: SQLite re-reads a subquery on the table a DELETE is removing rows from as it goes.
    first_dropped = session.scalar(
        select(Sample.step)
        .where(Sample.job_id == job_id)
        .distinct()
        .order_by(Sample.step.desc())
        .offset(keep_steps)
        .limit(1)
    )
    if first_dropped is not None:
        session.execute(delete(Sample).where(Sample.job_id == job_id, Sample.step <= first_dropped))


def discard_samples_after(session: Session, job_id: str, step: int) -> None:
    """Delete the samples past `step` (a resumed run logs those steps again)."""
    session.execute(delete(Sample).where(Sample.job_id == job_id, Sample.step > step))


def _sample_item(dialect: str) -> ColumnElement[str]:
    """A sample as `api.schemas.SampleOut`."""
    return json_object(
        dialect,
        {
            "step": Sample.step,
            "index": Sample.index,
            "prompt": embedded_json(dialect, Sample.prompt),
            "completion": embedded_json(dialect, Sample.completion),
            "rewards": embedded_json(dialect, Sample.rewards),
            "advantage": Sample.advantage,
        },
    )


@lru_cache
def _samples_statement(dialect: str, exact_step: bool) -> Select[str]:
    statement = select(_sample_item(dialect)).where(Sample.job_id == bindparam("job_id"))
    if exact_step:
        statement = statement.where(Sample.step == bindparam("step"))
    else:
        statement = statement.where(Sample.step > bindparam("after"))
    return statement.order_by(Sample.step, Sample.index).limit(bindparam("limit"))


def latest_sampled_step(connection: Connection, job_id: str) -> int | None:
    """The newest step that has samples, or None."""
    step: int | None = connection.scalar(select(func.max(Sample.step)).where(Sample.job_id == job_id))
    return step


def read_samples(
    connection: Connection, job_id: str, *, step: int | None, after_step: int, limit: int
) -> tuple[list[str], bool]:
    """Samples as JSON, by step then index: those of `step` when given, else those after `after_step`; and whether
    more follow."""
    statement = _samples_statement(connection.dialect.name, step is not None)
    parameters = {"job_id": job_id, "step": step, "after": after_step, "limit": limit + 1}
    items = list(connection.scalars(statement, parameters))
    return items[:limit], len(items) > limit
