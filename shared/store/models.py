"""The tables: jobs, their metric points, samples, checkpoints and events; uploaded files; workers; projects and
their API keys.

The schema itself is created by the Alembic migrations in `migrations/`; these classes mirror it for queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# JSONB on Postgres (indexable, compact), JSON text elsewhere.
JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One GRPO training job: its spec, its place in the state machine and a summary of its progress."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    # Which claim of the job this is (1 for the first run); every claim increments it.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    total_steps: Mapped[int | None] = mapped_column(Integer)
    latest_step: Mapped[int | None] = mapped_column(Integer)
    latest_metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # TRL's end-of-training log (train_runtime, train_loss, ...).
    summary: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # While running: the time by which the worker must renew its claim, or lose the job to the reconciler.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # When a "run job X" message was last sent (a queued job not taken long after it was lost by the broker).
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # What a user asked of a running job that its worker carries out ("pause").
    requested_action: Mapped[str | None] = mapped_column(String(20))
    # How many claims ended with their worker lost (crash, kill, machine gone): bounded by GRPO_MAX_ATTEMPTS.
    lost_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The step the latest resume continued from: points past it were logged again (a polling client that sees
    # `attempt` change rewinds its cursor here).
    resumed_from_step: Mapped[int | None] = mapped_column(Integer)
    # The project the job belongs to: only its keys (and admins) see it.
    project: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    # Unique within its project: another project's keys are another project's business.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The user's labels (`metadata` in the spec), a column of its own so that the job list can filter by them.
    # (`metadata` is taken on declarative classes.)
    labels: Mapped[dict[str, str] | None] = mapped_column("metadata", JsonType)
    # Seconds from submission to the first claim: what /metrics' submit-to-running histogram counts.
    queued_seconds: Mapped[float | None] = mapped_column(Float)
    # Metric points written for this job (re-sent ones included): summed for /metrics.
    points_ingested: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # GPUs the job needs of a worker (training and vLLM): the queue it is sent to (shared/spec/resources.py).
    gpus_needed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # GPUs its current claim holds on its worker (what a project's max_gpus counts): on a GPU worker a job that
    # names no GPU count takes one.
    gpus_held: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Why a queued job waits, when the service knows (no registered worker can hold it).
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Since when a queued job is held back by its project's limits (shared/quotas.py); None when it is not.
    held_since: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_project_created_at_id", "project", "created_at", "id"),
        UniqueConstraint("project", "idempotency_key", name="uq_jobs_project_idempotency_key"),
    )


class MetricPoint(Base):
    """Everything TRL logged at one optimizer step of one job, under TRL's own keys."""

    __tablename__ = "metric_points"

    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonType)
    logged_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Checkpoint(Base):
    """A saved training state of a job (`checkpoint-<step>`), or its final model (`final`), on the data volume."""

    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Sample(Base):
    """One completion the trainer generated at a logged step, with its prompt, each reward's score and its
    advantage: captured from what TRL already gathers for `log_completions`, never generated again."""

    __tablename__ = "samples"

    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True)
    prompt: Mapped[Any] = mapped_column(JsonType, nullable=True)
    completion: Mapped[Any] = mapped_column(JsonType, nullable=True)
    rewards: Mapped[dict[str, float | None]] = mapped_column(JsonType)
    advantage: Mapped[float | None] = mapped_column(Float)


class Worker(Base):
    """A worker process: registered when it starts, its heartbeat renewed by its sweep, and what it runs now."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    current_job: Mapped[str | None] = mapped_column(String(40))
    devices: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class UploadedFile(Base):
    """A prompt dataset uploaded with POST /v1/files; its bytes live in the data dir, never in the database."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(20))
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    prompt_format: Mapped[str] = mapped_column(String(20))
    columns: Mapped[list[str]] = mapped_column(JsonType)
    column_map: Mapped[dict[str, str] | None] = mapped_column(JsonType)
    sample: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    project: Mapped[str] = mapped_column(String(64), default="default", server_default="default")

    __table_args__ = (
        Index("ix_files_created_at_id", "created_at", "id"),
        Index("ix_files_project_created_at_id", "project", "created_at", "id"),
    )


class JobEvent(Base):
    """A moment in a job's life: a state change, an error (with its traceback), a note from the worker."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonType)


class Project(Base):
    """A team's own space: its jobs and files (once scoped), and the limits the operator sets on it (None: none)."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    max_gpus: Mapped[int | None] = mapped_column(Integer)
    max_steps: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    """An API key of a project, with its role. Only a digest of the key is kept: it is shown once, when made."""

    __tablename__ = "api_keys"

    # The key's first characters, unique: how a key is listed, revoked and named in events.
    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64), ForeignKey("projects.name"), index=True)
    role: Mapped[str] = mapped_column(String(10))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Secret(Base):
    """A credential of a project (HF_TOKEN, WANDB_API_KEY, ...), encrypted with GRPO_SECRET_KEY; only a training
    process of a job that names it ever sees the value."""

    __tablename__ = "secrets"

    project: Mapped[str] = mapped_column(String(64), ForeignKey("projects.name"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # The key (by prefix) that set it last, or who changed it from the command line.
    updated_by: Mapped[str | None] = mapped_column(String(64))


class AuditEvent(Base):
    """A change a person made that is not a job's own event: keys, projects and their limits, secrets, files."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # The project the change concerns (None: the whole service).
    project: Mapped[str | None] = mapped_column(String(64))
    # The key by prefix, or "cli:<user>" for a change made with the grpo command against the database.
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonType)

    __table_args__ = (Index("ix_audit_events_project_id", "project", "id"),)
