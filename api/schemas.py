"""Response bodies of the API (the request body is `shared.spec.JobSpec`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class JobOut(BaseModel):
    """A job: its status, timing, error and latest metrics, and the spec it was submitted with."""

    id: str
    object: str = "job"
    name: str | None
    model: str
    status: str = Field(description="queued, running, paused, succeeded, failed or cancelled")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Why the job failed, in words; the traceback is in its events.")
    attempt: int = Field(description="How many times a worker has claimed the job (a resume is a new claim).")
    worker: str | None
    total_steps: int | None = Field(description="Optimizer steps the trainer plans to run (known once it starts).")
    latest_step: int | None
    requested_action: str | None = Field(description="`pause` while a running job's worker is pausing it.")
    lost_attempts: int = Field(description="Claims that ended with their worker lost (crash, kill).")
    resumed_from_step: int | None = Field(
        description="The checkpoint step the latest resume continued from; the steps after it were logged again. "
        "A client polling metrics that sees `attempt` change should continue from after this step."
    )
    heartbeat_at: datetime | None = Field(description="When the worker last renewed its claim on the job.")
    latest_metrics: dict[str, Any] | None = Field(description="Everything TRL logged at the latest step.")
    summary: dict[str, Any] | None = Field(description="TRL's end-of-training log: train_runtime, train_loss, ...")
    spec: dict[str, Any]


class JobList(BaseModel):
    data: list[JobOut]
    has_more: bool


class MetricPointOut(BaseModel):
    """Every key TRL logged at one step, under TRL's own names (`reward`, `reward_std`, `kl`, ...)."""

    step: int
    epoch: float | None
    metrics: dict[str, Any]
    logged_at: datetime


class MetricPage(BaseModel):
    data: list[MetricPointOut]
    has_more: bool = Field(description="More points follow: ask again with after_step = the last step here.")


class CheckpointOut(BaseModel):
    """A saved training state (`checkpoint-<step>`) or the final model (`final`)."""

    name: str
    step: int
    attempt: int = Field(description="The claim that saved it.")
    created_at: datetime
    size_bytes: int
    metrics: dict[str, Any] | None = Field(description="What TRL logged at that step.")


class CheckpointList(BaseModel):
    data: list[CheckpointOut]


class EventOut(BaseModel):
    id: int
    created_at: datetime
    kind: str = Field(description="status, error or info")
    message: str
    data: dict[str, Any] | None


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
