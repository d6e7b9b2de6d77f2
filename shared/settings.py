"""Every setting of the service, read once from `GRPO_*` environment variables and passed down.

The defaults make the *embedded* deployment: a SQLite database and a serverless broker, both files in the data
dir, so `grpo up` needs no server. Production sets `GRPO_DATABASE_URL` (Postgres) and `GRPO_BROKER_URL` (Redis).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The stores the rate limits' counters may live in (those whose client the service installs).
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")


class Settings(BaseSettings):
    """Settings shared by the API, the workers and the command line."""

    model_config = SettingsConfigDict(env_prefix="GRPO_", extra="ignore")

    data_dir: Path = Field(
        default=Path("grpo-data"),
        description="Uploaded files, job outputs (checkpoints, logs) and the embedded database and broker.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the job database; default: a SQLite file in the data dir.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker URL; default: a serverless SQLite-backed broker in the data dir.",
    )
    queue: str = Field(default="grpo", description="Name of the Celery queue jobs are sent to.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description=(
            "Where workers train. `cpu` also lets the API refuse bf16/fp16 specs at submit time; "
            "`auto` uses CUDA when a worker has it."
        ),
    )
    api_url: str = Field(default="http://127.0.0.1:8000", description="Where `grpo submit` and `grpo watch` send.")
    access_log: bool = Field(
        default=False, description="Log every HTTP request the API answers (costs a good part of its throughput)."
    )
    auth: Literal["on", "off"] = Field(
        default="on",
        description="`off` runs the API open: every request acts as an admin of the default project (said in the "
        "log and on /healthz). Only for a machine nobody else reaches.",
    )
    api_key: str | None = Field(
        default=None,
        description="The key the command line (`grpo submit`, `watch`, `jobs`, ...) sends; default: the one "
        "`grpo up` wrote to <data dir>/api-key.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="The Fernet key projects' secrets are encrypted with at rest (`grpo secret-key` makes one); the "
        "API and every worker need the same. Several, comma-separated, for a rotation: the first encrypts, each "
        "decrypts. Default: the file <data dir>/secret-key, which `grpo up` makes.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1", "localhost", "::1"],
        description="Host names the API answers to (its Host header, against DNS rebinding), comma-separated; `*` "
        "for any. Default: the loopback names.",
    )
    lease_seconds: float = Field(
        default=30, gt=0, description="How long a running job stays its worker's without a heartbeat."
    )
    heartbeat_seconds: float = Field(
        default=1, gt=0, description="How often a worker renews its job's lease (and sees a cancel or pause)."
    )
    sweep_seconds: float = Field(
        default=10, gt=0, description="How often each worker looks for expired leases and lost queue messages."
    )
    resend_after_seconds: float = Field(
        default=30,
        gt=0,
        description="A queued job an idle worker has not received this long after its message was sent is sent again.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="How many times a job may lose its worker (crash, kill) before it fails."
    )
    stop_grace_seconds: float = Field(
        default=30,
        gt=0,
        description="Time a stopping worker (SIGTERM) or a pause gives the trainer to save a checkpoint.",
    )
    stall_seconds: float = Field(
        default=1800, gt=0, description="A running job whose training makes no step for this long is failed."
    )
    reward_timeout_seconds: float = Field(
        default=120, gt=0, description="Longest a Python reward function may take for one call (in its sandbox)."
    )
    reward_memory_mb: int = Field(
        default=2048, ge=256, description="Memory a reward sandbox (the Python rewards of one job) may use."
    )
    reward_require_kernel_sandbox: bool = Field(
        default=False,
        description="Refuse to run Python rewards where the kernel cannot confine them (Landlock, seccomp); "
        "by default they run with what the kernel offers, and the job's events say what that was.",
    )
    preview_timeout_seconds: float = Field(
        default=10, gt=0, description="Longest one reward may take in POST /v1/rewards/preview (the caller waits)."
    )
    preview_concurrency: int = Field(
        default=4, ge=1, description="Reward previews one API process runs at once (each starts a sandbox); more: 429."
    )
    max_upload_mb: int = Field(default=1024, ge=1, description="Largest dataset file POST /v1/files takes.")
    rate_limit_submit: str | None = Field(
        default="120/minute",
        description="Job submits (POST /v1/jobs) one key may make, as COUNT/PERIOD (`120/minute`; several as "
        "`10/second;500/hour`); more are a 429 with Retry-After. `off` (or empty): no limit.",
    )
    rate_limit_preview: str | None = Field(
        default="120/minute",
        description="Reward previews (POST /v1/rewards/preview) one key may ask for, as COUNT/PERIOD; `off`: no limit.",
    )
    rate_limit_upload: str | None = Field(
        default="60/minute",
        description="Uploads (POST /v1/files) one key may make, as COUNT/PERIOD; `off`: no limit.",
    )
    rate_limit_storage_url: str | None = Field(
        default=None,
        description="Where the rate limits' counters live, shared by every API process: `redis://...` or "
        "`memory://` (each process its own). Default: the broker's Redis, else memory.",
    )
    default_save_steps: int | None = Field(
        default=None,
        gt=0,
        description="Checkpoint every N steps when a spec sets neither args.save_steps nor args.save_strategy "
        "(unset: TRL's default, every 500 steps).",
    )
    vllm_server_url: str | None = Field(
        default=None,
        description="An operator's vLLM server (`trl vllm-serve`): jobs in vllm_mode 'server' that name none "
        "generate with it.",
    )
    vllm_start_timeout_seconds: float = Field(
        default=600, gt=0, description="How long a vLLM server a worker starts for a job may take to become healthy."
    )
    vllm_serve_command: str = Field(
        default="trl vllm-serve",
        description="The command a worker starts a job's vLLM server with (shell words; the worker adds --model, "
        "--port and the rest). A bare program name is looked for beside the worker's Python first, then on PATH.",
    )
    celery_task_events: bool = Field(
        default=False,
        description="Workers send Celery task events (what Flower's task pages show; the compose `flower` profile).",
    )
    stream_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        description="How often an open GET /v1/jobs/{id}/stream looks for new points and events in the database.",
    )
    samples_per_step: int = Field(
        default=8,
        ge=0,
        description="Completions kept per logged step (prompt, completion, each reward, advantage); 0 keeps none.",
    )
    sample_steps_kept: int = Field(
        default=200, ge=1, description="A job keeps the samples of its newest this many logged steps."
    )
    sample_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Samples are kept of at most one logged step in this many seconds (and of the last step); 0: "
        "of every logged step.",
    )
    sample_max_chars: int = Field(
        default=4000, ge=100, description="A sample's prompt or completion is cut to this many characters."
    )
    allow_remote_code: bool = Field(
        default=False,
        description="Let specs set trust_remote_code (in args or args.model_init_kwargs): a model that ships its "
        "own Python code then runs it on the workers.",
    )
    hub: Literal["on", "off"] = Field(
        default="on",
        description="`off`: specs name only local models and datasets, no Hugging Face Hub ids, and push nothing to "
        "the Hub.",
    )
    paths: Literal["roots", "anywhere"] = Field(
        default="roots",
        description="Where a spec's local paths may point: `roots`, under model_roots / dataset_roots; `anywhere`, "
        "any path the workers can read (`grpo up` sets it unless paths or a root is set).",
    )
    model_roots: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        description="Folders a spec's local models (`model`, reward models) must lie in, symlinks resolved; "
        "separated by os.pathsep or commas. Default: <data dir>/models.",
    )
    dataset_roots: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        description="Folders a spec's dataset paths must lie in, symlinks resolved; separated by os.pathsep or "
        "commas. Default: <data dir>/datasets.",
    )
    broker_polling_interval: float = Field(
        default=0.1,
        gt=0,
        description="Seconds between polls of the serverless broker (only the embedded SQLite broker polls).",
    )
    metrics_flush_interval: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Longest time (s) a logged training step waits in the worker before it is written to the database. "
            "Default: 0.1 on SQLite; 0.25 elsewhere, where each write wakes the database server's processes and, "
            "measured on a 2-core machine, 0.1 cost training about 5% of its speed."
        ),
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Child processes and the forkserver may run from another working directory: pin the path now.
        return value.expanduser().resolve()

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return [part.strip().lower() for part in value.split(",") if part.strip()]

    @property
    def api_key_file(self) -> Path:
        """Where `grpo up` keeps the key of its single user (mode 0600), and the command line looks for it."""
        return self.data_dir / "api-key"

    @property
    def secret_key_file(self) -> Path:
        """Where the key of secrets is kept when GRPO_SECRET_KEY is unset (mode 0600; `grpo up` makes it)."""
        return self.data_dir / "secret-key"

    @field_validator("model_roots", "dataset_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        # An environment variable holds a list as PATH does (or with commas); blank is unset.
        if not isinstance(value, str):
            return value
        roots = [part.strip() for part in re.split(f"[{re.escape(os.pathsep)},]", value) if part.strip()]
        return roots or None

    @field_validator("rate_limit_submit", "rate_limit_preview", "rate_limit_upload")
    @classmethod
    def _rate_limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        """The limit as written (`2/minute`), or None for `off`; a value `limits` cannot read is refused at startup,
        naming the setting."""
        text = (value or "").strip()
        if text.lower() in ("", "off"):
            return None
        setting = f"GRPO_{str(info.field_name).upper()}"
        try:
            items = parse_many(text)
        except ValueError:
            raise ValueError(
                f"{setting}={text!r} is not a rate limit: write COUNT/PERIOD (second, minute, hour or day), e.g. "
                f"120/minute or 10/second;500/hour, or off for no limit"
            ) from None
        if any(item.amount < 1 for item in items):
            raise ValueError(f"{setting}={text!r} allows nothing: give a count of at least 1, or off for no limit")
        return text

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _rate_limit_storage(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = value.partition("://")[0]
        if scheme not in RATE_LIMIT_STORAGE_SCHEMES:
            # Named by its scheme alone: the URL may hold a password.
            raise ValueError(
                f"GRPO_RATE_LIMIT_STORAGE_URL: {scheme!r} is not a store the rate limits can count in: give "
                "redis://HOST:PORT/DB (rediss:// with TLS, redis+unix:///PATH for a socket) or memory:// (each API "
                "process counts alone)"
            )
        return value

    @model_validator(mode="after")
    def _roots_or_anywhere(self) -> Settings:
        if self.paths == "anywhere" and (self.model_roots is not None or self.dataset_roots is not None):
            raise ValueError(
                "GRPO_PATHS=anywhere lets local paths point anywhere, so GRPO_MODEL_ROOTS / GRPO_DATASET_ROOTS "
                "would not apply: unset GRPO_PATHS to confine paths to the roots, or unset the roots"
            )
        return self

    @property
    def effective_model_roots(self) -> list[Path]:
        """The folders local model paths must lie in where `paths` is `roots`."""
        return self.model_roots if self.model_roots is not None else [self.data_dir / "models"]

    @property
    def effective_dataset_roots(self) -> list[Path]:
        """The folders dataset paths must lie in where `paths` is `roots`."""
        return self.dataset_roots if self.dataset_roots is not None else [self.data_dir / "datasets"]

    @property
    def effective_database_url(self) -> str:
        """The database URL in use: the setting, or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.data_dir / 'grpo.sqlite'}"

    @property
    def effective_broker_url(self) -> str:
        """The broker URL in use: the setting, or the embedded SQLite-backed broker."""
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def effective_metrics_flush_interval(self) -> float:
        """The metrics flush interval in use (see `metrics_flush_interval`)."""
        if self.metrics_flush_interval is not None:
            return self.metrics_flush_interval
        return 0.1 if self.effective_database_url.startswith("sqlite") else 0.25

    @property
    def effective_rate_limit_storage_url(self) -> str:
        """Where the rate limits count: the setting; else the broker's Redis (shared by every API process); else
        this process's memory (the embedded default)."""
        if self.rate_limit_storage_url:
            return self.rate_limit_storage_url
        broker = self.effective_broker_url
        return broker if broker.partition("://")[0] in ("redis", "rediss") else "memory://"

    @property
    def is_embedded_broker(self) -> bool:
        """True when the broker is kombu's SQLAlchemy transport (no server process)."""
        return self.effective_broker_url.startswith("sqla+")

    @property
    def worker_alive_seconds(self) -> float:
        """A worker whose heartbeat (renewed every sweep) is older than this is counted as gone."""
        return 3 * self.sweep_seconds + self.heartbeat_seconds

    @property
    def files_dir(self) -> Path:
        """Where uploaded dataset files live (`<id>/<name>`), and uploads arrive (`.incoming/`)."""
        return self.data_dir / "files"

    def job_dir(self, job_id: str) -> Path:
        """The directory that holds everything one job writes (checkpoints, final model, training log)."""
        return self.data_dir / "jobs" / job_id

    def ensure_data_dir(self) -> None:
        """Create the data dir; SQLite needs its parent folder to exist."""
        self.data_dir.mkdir(parents=True, exist_ok=True)


def load_settings() -> Settings:
    """Read the settings from the environment (call once per process, then pass the object down)."""
    return Settings()
