"""Checkpoints and final models a claim saved: registered (fenced), rotated, found for a resume, read for the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    case,
    delete,
    false,
    func,
    select,
)
from sqlalchemy.orm import Session

from shared.store.json_sql import embedded_json, json_object, utc_time
from shared.store.models import Checkpoint, Job, MetricPoint, utcnow
from shared.store.states import fence

FINAL_MODEL = "final"


def record_checkpoint(
    session: Session, job_id: str, attempt: int, *, name: str, step: int, path: str, size_bytes: int
) -> None:
    """Register a checkpoint (or, under FINAL_MODEL, the final model) a claim saved; fenced."""
    fence(session, job_id, attempt)
    session.merge(
        Checkpoint(
            job_id=job_id, name=name, step=step, attempt=attempt, path=path, size_bytes=size_bytes, created_at=utcnow()
        )
    )


def forget_checkpoints(session: Session, job_id: str, attempt: int, names: list[str]) -> None:
    """Unregister checkpoints the trainer deleted (save_total_limit); fenced."""
    if names:
        fence(session, job_id, attempt)
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.name.in_(names)))


def training_checkpoints(session: Session, job_id: str) -> list[Checkpoint]:
    """A job's training checkpoints (not its final model), newest first: where a resume may continue from."""
    return list(
        session.scalars(
            select(Checkpoint)
            .where(Checkpoint.job_id == job_id, Checkpoint.name != FINAL_MODEL)
            .order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc())
        )
    )


def get_checkpoint(session: Session, job_id: str, name: str) -> Checkpoint | None:
    """One checkpoint of a job by name, or None."""
    return session.get(Checkpoint, (job_id, name))


def _trains_adapter(dialect: str) -> ColumnElement[bool]:
    """Whether the checkpoint's job trains a LoRA adapter: its spec has a `peft_config`."""
    if dialect == "postgresql":
        return func.jsonb_typeof(Job.spec["peft_config"]) == "object"
    return func.json_type(Job.spec, "$.peft_config") == "object"


def _json_boolean(dialect: str, condition: ColumnElement[bool]) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.coalesce(condition, false())
    # SQLite's json() marks its result as JSON, so json_object nests `true`, not 1 or a string.
    return func.json(case((condition, "true"), else_="false"))


def _checkpoint_item(dialect: str) -> ColumnElement[str]:
    """A checkpoint as `api.schemas.CheckpointOut`, with the metrics logged at its step. A LoRA job's checkpoints
    and final model are adapters, which apply to the job's `model` (`base_model`)."""
    adapter = _trains_adapter(dialect)
    return json_object(
        dialect,
        {
            "name": Checkpoint.name,
            "step": Checkpoint.step,
            "attempt": Checkpoint.attempt,
            "created_at": utc_time(dialect, Checkpoint.created_at),
            "size_bytes": Checkpoint.size_bytes,
            "adapter": _json_boolean(dialect, adapter),
            "base_model": case((adapter, Job.spec["model"].as_string()), else_=None),
            "metrics": embedded_json(dialect, MetricPoint.metrics),
        },
    )


def read_checkpoints(connection: Connection, job_id: str) -> list[str]:
    """A job's checkpoints as JSON, by step (the final model last)."""
    dialect = connection.dialect.name
    statement = (
        select(_checkpoint_item(dialect))
        .select_from(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .outerjoin(MetricPoint, (MetricPoint.job_id == Checkpoint.job_id) & (MetricPoint.step == Checkpoint.step))
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.step, Checkpoint.name == FINAL_MODEL)
    )
    return list(connection.scalars(statement))
