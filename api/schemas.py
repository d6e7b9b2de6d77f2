"""Response bodies of the API (the request body is `shared.spec.JobSpec`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.models import Job, JobEvent, MetricPoint


class JobOut(BaseModel):
    """A job: its status, timing, error and latest metrics, and the spec it was submitted with."""

    id: str
    object: str = "job"
    name: str | None
    model: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Why the job failed, in words; the traceback is in its events.")
    attempt: int = Field(description="How many times a worker has claimed the job.")
    worker: str | None
    total_steps: int | None = Field(description="Optimizer steps the trainer plans to run (known once it starts).")
    latest_step: int | None
    latest_metrics: dict[str, Any] | None = Field(description="Everything TRL logged at the latest step.")
    summary: dict[str, Any] | None = Field(description="TRL's end-of-training log: train_runtime, train_loss, ...")
    spec: dict[str, Any]

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            name=job.name,
            model=str(job.spec.get("model", "")),
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            attempt=job.attempt,
            worker=job.worker,
            total_steps=job.total_steps,
            latest_step=job.latest_step,
            latest_metrics=job.latest_metrics,
            summary=job.summary,
            spec=job.spec,
        )


class JobList(BaseModel):
    data: list[JobOut]
    has_more: bool


class MetricPointOut(BaseModel):
    """Every key TRL logged at one step, under TRL's own names (`reward`, `reward_std`, `kl`, ...)."""

    step: int
    epoch: float | None
    metrics: dict[str, Any]
    logged_at: datetime

    @classmethod
    def of(cls, point: MetricPoint) -> MetricPointOut:
        return cls(step=point.step, epoch=point.epoch, metrics=point.metrics, logged_at=point.logged_at)


class MetricPage(BaseModel):
    data: list[MetricPointOut]
    has_more: bool = Field(description="More points follow: ask again with after_step = the last step here.")


class EventOut(BaseModel):
    id: int
    created_at: datetime
    kind: str = Field(description="status, error or info")
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: JobEvent) -> EventOut:
        return cls(id=event.id, created_at=event.created_at, kind=event.kind, message=event.message, data=event.data)


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    type: str
    message: str
    errors: list[FieldError] = []


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the API has this shape."""

    error: ErrorDetail
