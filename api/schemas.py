"""Bodies of the API: responses, and the preview request (a job's body is `shared.spec.JobSpec`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.spec.rewards import RewardSpec


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
    status_reason: str | None = Field(
        description="Why a queued job is waiting, when the service knows: its project is at a limit ('project "
        "research: 2 of 2 running jobs'), or no registered worker can hold it."
    )
    lost_attempts: int = Field(description="Claims that ended with their worker lost (crash, kill).")
    resumed_from_step: int | None = Field(
        description="The checkpoint step the latest resume continued from; the steps after it were logged again. "
        "A client polling metrics that sees `attempt` change should continue from after this step."
    )
    heartbeat_at: datetime | None = Field(description="When the worker last renewed its claim on the job.")
    metadata: dict[str, str] | None = Field(description="The labels the job was submitted with.")
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


class SampleOut(BaseModel):
    """One completion the trainer generated at a logged step, as TRL gathered it for `log_completions`."""

    step: int
    index: int = Field(description="Its place among the step's samples (the first of the generation batch first).")
    prompt: Any = Field(description="Text, or chat messages.")
    completion: Any = Field(description="Text, or chat messages.")
    rewards: dict[str, float | None] = Field(description="Each reward function's score, by the name TRL logs.")
    advantage: float | None


class SamplePage(BaseModel):
    data: list[SampleOut]
    has_more: bool = Field(description="More samples follow: ask again with after_step = the last step here.")


class SeriesOut(BaseModel):
    """Metrics as chart series: one x (step) per point, one value per key and point (null: not logged there)."""

    keys: list[str]
    steps: list[int] = Field(description="Steps; a downsampled point stands for the bucket starting at it.")
    values: dict[str, list[float | None]]
    points: int = Field(description="Points in the range, before downsampling.")
    downsampled: bool = Field(description="Each value is the mean over `bucket_steps` steps.")
    bucket_steps: int
    from_step: int | None
    to_step: int | None


class WorkerOut(BaseModel):
    """A worker process, from its registration and heartbeats."""

    name: str
    hostname: str
    pid: int
    alive: bool = Field(description="Heartbeat recent, and not stopped.")
    current_job: str | None
    devices: dict[str, Any] | None
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


class WorkerList(BaseModel):
    data: list[WorkerOut]


class CheckpointOut(BaseModel):
    """A saved training state (`checkpoint-<step>`) or the final model (`final`)."""

    name: str
    step: int
    attempt: int = Field(description="The claim that saved it.")
    created_at: datetime
    size_bytes: int
    adapter: bool = Field(
        description="A LoRA adapter (the job has a `peft_config`): adapter_config.json and adapter_model.safetensors, "
        "for `peft.PeftModel.from_pretrained(base, path)`; false: the whole model."
    )
    base_model: str | None = Field(description="The model the adapter applies to (the job's `model`); null if none.")
    metrics: dict[str, Any] | None = Field(description="What TRL logged at that step.")


class CheckpointList(BaseModel):
    data: list[CheckpointOut]


class EventOut(BaseModel):
    id: int
    created_at: datetime
    kind: str = Field(description="status, error, info, or log (the output of a job's vLLM server, in batches)")
    message: str
    data: dict[str, Any] | None


class EventPage(BaseModel):
    data: list[EventOut]
    has_more: bool


class FileOut(BaseModel):
    """An uploaded prompt dataset: what was found in it, and the id a job's `{"file_id": ...}` names."""

    id: str
    object: str = "file"
    filename: str
    bytes: int
    rows: int
    format: str = Field(description="jsonl, json, csv or parquet")
    prompt_format: str = Field(
        description="`standard` (each prompt a string) or `conversational` (each prompt a list of chat messages)"
    )
    columns: list[str] = Field(description="Columns after the upload's column_map; reward functions get them all.")
    column_map: dict[str, str] | None
    sample: list[dict[str, Any]] = Field(description="The first few rows, as the trainer will see them.")
    created_at: datetime


class FileList(BaseModel):
    data: list[FileOut]


class FileDeleted(BaseModel):
    id: str
    object: str = "file"
    deleted: bool = True


class PreviewRequest(BaseModel):
    """Reward functions and a batch to score, as TRL would pass it: one entry per completion in `completions`,
    `prompts`, `completion_ids` and each of `columns` (the dataset's other columns, e.g. `answers`)."""

    model_config = ConfigDict(extra="forbid")

    reward_funcs: list[RewardSpec] = Field(min_length=1, max_length=16)
    completions: list[str | list[dict[str, Any]]] = Field(
        min_length=1, max_length=256, description="Texts, or (conversational) lists of chat messages."
    )
    prompts: list[str | list[dict[str, Any]]] | None = Field(default=None, description="Default: null for each.")
    completion_ids: list[list[int]] | None = Field(default=None, description="Token ids; default: null for each.")
    columns: dict[str, list[Any]] = Field(
        default_factory=dict, description='Dataset columns by name, one value per completion: {"answers": [...]}.'
    )
    reward_weights: list[float] | None = Field(
        default=None, description="As args.reward_weights: the `total` is the weighted sum (default weight 1.0)."
    )


class RewardScoresOut(BaseModel):
    index: int = Field(description="The reward's place in reward_funcs.")
    name: str = Field(description="The name its metrics are logged under (`rewards/<name>/mean`).")
    scores: list[float | None] | None = Field(description="One per completion; null entries are left out by TRL.")
    error: str | None = Field(description="Why it has no scores: what it raised, returned, or how long it ran.")
    traceback: str | None
    metrics: dict[str, float] = Field(description="What it logged with `log_metric`.")
    seconds: float


class PreviewOut(BaseModel):
    results: list[RewardScoresOut]
    total: list[float] | None = Field(
        description="Per completion, the weighted sum TRL trains on (None entries count as 0); null when a reward "
        "failed."
    )
    output: str = Field(description="What the reward functions printed.")
    sandbox: str | None = Field(
        default=None,
        description="What the worker's kernel enforced on the sandbox the rewards ran in (files, network, "
        "processes); null when no sandbox started.",
    )


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
