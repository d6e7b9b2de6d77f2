"""Builds and runs one `GRPOTrainer` for one job. Runs inside the job's training child process.

This module imports torch, transformers and TRL at the top on purpose: the worker's forkserver preloads it, so
every training child starts with them already imported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer

from sandbox.client import SandboxLimits
from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.spec.resources import DoesNotFit, gpu_plan
from shared.store import files, jobs
from shared.store.checkpoints import FINAL_MODEL, record_checkpoint, training_checkpoints
from shared.store.db import Database
from shared.store.events import add_event
from shared.store.metrics import discard_metrics_after
from shared.store.models import UploadedFile
from shared.store.states import LeaseLost
from worker.callbacks import CheckpointCallback, ControlCallback, directory_size
from worker.child import WorkerLink
from worker.data import DatasetProblem, load_prompts
from worker.distributed import free_port, is_main_rank, is_rank_process, launch_command, run_ranks
from worker.lora import build_lora_config
from worker.metrics import MetricsCallback, MetricsWriter, MetricsWriterFailed
from worker.model_paths import ModelNotFound, check_model_reference
from worker.rewards import RewardFunctionError, Rewards, build_reward_funcs
from worker.vllm_server import EventSink, VllmServerFailed, start_for_job, trainer_arguments

# The CUDA_VISIBLE_DEVICES the worker itself had, kept before the child narrows it to training's GPUs.
WORKER_DEVICES_ENV = "GRPO_WORKER_CUDA_VISIBLE_DEVICES"


@dataclass
class GpuPlan:
    """The CUDA devices (as CUDA_VISIBLE_DEVICES names them) a job trains on, and those its vLLM server gets."""

    training: list[str]
    vllm: list[str]


@dataclass
class Outcome:
    """How a training run ended, as the child reports it to the worker."""

    succeeded: bool
    error: str | None = None
    traceback: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    # Stopped on the worker's request (pause, hand-off) after saving a checkpoint at this step.
    stopped_at_step: int | None = None


class TrainingFailed(RuntimeError):
    """Training could not run or finish; the message says at which stage and why."""


READABLE_ERRORS = (
    TrainingFailed,
    RewardFunctionError,
    DatasetProblem,
    MetricsWriterFailed,
    ModelNotFound,
    LeaseLost,
    DoesNotFit,
    VllmServerFailed,
)


def choose_precision(args: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """bf16 where the GPU supports it, fp32 on a CPU, unless the spec chose; refuse bf16/fp16 without a GPU."""
    has_cuda = settings.device != "cpu" and torch.cuda.is_available()
    if settings.device == "cuda" and not has_cuda:
        raise TrainingFailed("GRPO_DEVICE is cuda but this worker sees no CUDA GPU: check the GPU reservation")
    if has_cuda:
        if "bf16" not in args and "fp16" not in args:
            return {"bf16": torch.cuda.is_bf16_supported()}
        return {}
    for name in ("bf16", "fp16"):
        if args.get(name):
            raise TrainingFailed(
                f"args.{name}=true needs a GPU, and this worker has only a CPU: remove args.{name} "
                "(the service picks bf16 on GPUs that support it and fp32 on CPUs)"
            )
    # TRL defaults bf16 to True, which transformers refuses on a CPU.
    return {"bf16": False, "fp16": False, "use_cpu": True}


def build_config(spec: JobSpec, settings: Settings, output_dir: Path) -> GRPOConfig:
    """GRPOConfig from the spec's args, with the service's output dir, checkpoint default and precision."""
    arguments: dict[str, Any] = {"report_to": "none", "disable_tqdm": True, **spec.args}
    if settings.default_save_steps and "save_steps" not in spec.args and "save_strategy" not in spec.args:
        arguments["save_steps"] = settings.default_save_steps
    arguments.update(choose_precision(spec.args, settings))
    arguments.update(trainer_arguments(spec.args, settings.vllm_server_url))
    arguments["output_dir"] = str(output_dir)
    return GRPOConfig(**arguments)


def _stage_error(stage: str, error: BaseException) -> TrainingFailed:
    if isinstance(error, READABLE_ERRORS):
        return TrainingFailed(f"{stage}: {error}")  # already says what went wrong in words
    return TrainingFailed(f"{stage}: {type(error).__name__}: {error}")


def train(
    settings: Settings,
    database: Database,
    job_id: str,
    attempt: int,
    link: WorkerLink | None,
    worker_gpus: int = 0,
) -> Outcome:
    """Run (or resume) the job's GRPO training to the end on the worker's GPUs (0: its CPU); every failure is
    returned as an Outcome. A job of several processes is launched from here (worker/distributed.py), and each of
    its ranks comes back here, rank 0 with the `link` and the others without."""
    cleanup = contextlib.ExitStack()  # what the run started that ends with it: the job's vLLM server
    try:
        return _train(settings, database, job_id, attempt, link, worker_gpus, cleanup)
    except TrainingFailed as failure:
        return Outcome(False, str(failure), "".join(traceback.format_exception(failure.__cause__ or failure)))
    except BaseException as error:  # anything unforeseen still ends the job with its reason
        return Outcome(False, f"{type(error).__name__}: {error}", traceback.format_exc())
    finally:
        cleanup.close()


def _note_confinement(database: Database, job_id: str, rewards: Rewards) -> None:
    """Tell the job's events how its Python rewards are confined (it depends on the worker's kernel)."""
    confinement = rewards.sandbox.confinement if rewards.sandbox is not None else None
    if confinement is None:
        return
    with database.session() as session:
        add_event(session, job_id, "info", f"reward sandbox started: {confinement.describe()}", asdict(confinement))


def _resume_point(database: Database, job_id: str, attempt: int, main: bool = True) -> str | None:
    """The newest checkpoint an earlier attempt saved that is still on disk, with the metrics past it discarded
    (the resumed run logs them again) by the main process. A later attempt with no checkpoint starts over."""
    if attempt == 1:
        return None
    with database.session() as session:
        checkpoint = next((c for c in training_checkpoints(session, job_id) if Path(c.path).is_dir()), None)
        if not main:
            return checkpoint.path if checkpoint else None
        step = checkpoint.step if checkpoint else 0
        discarded = discard_metrics_after(session, job_id, attempt, step)
        where = (
            f"{checkpoint.name} (saved by attempt {checkpoint.attempt})" if checkpoint else "the start (no checkpoint)"
        )
        add_event(
            session,
            job_id,
            "info",
            f"attempt {attempt} resumes from {where}; {discarded} metric point(s) past step {step} will be "
            "logged again",
            {"checkpoint": checkpoint.name if checkpoint else None, "step": step, "attempt": attempt},
        )
        return checkpoint.path if checkpoint else None


def _mixed_precision(precision: dict[str, Any], args: dict[str, Any]) -> str:
    """accelerate's --mixed_precision for the job's own choice (or the service's)."""
    chosen: dict[str, Any] = {**precision, **{k: args[k] for k in ("bf16", "fp16") if k in args}}
    return "bf16" if chosen.get("bf16") else "fp16" if chosen.get("fp16") else "no"


def _launch_ranks(
    settings: Settings,
    database: Database,
    spec: JobSpec,
    job_id: str,
    attempt: int,
    link: WorkerLink,
    worker_gpus: int,
) -> Outcome:
    """Run the job's processes (`resources.processes`) and relay between them and the worker."""
    stage = "launching the training processes"
    try:
        gpus = assign_gpus(spec, worker_gpus)
        precision = _mixed_precision(choose_precision(spec.args, settings), spec.args)
        command = launch_command(
            spec.resources,
            job_id,
            attempt,
            on_gpus=bool(gpus.training),
            mixed_precision=precision,
            port=free_port(),
        )
        print(f"launching {spec.resources.process_count()} training processes: {' '.join(command)}", flush=True)
    except Exception as error:
        raise _stage_error(stage, error) from error
    engine = "accelerate launch" if gpus.training else "torchrun (gloo, on the CPU)"
    with database.session() as session:
        add_event(
            session,
            job_id,
            "info",
            f"{spec.resources.process_count()} training processes launched with {engine}"
            + (f", preset {spec.resources.distributed or 'ddp'}" if gpus.training else ""),
            {"command": command, "gpus": gpus.training},
        )
    log_path = settings.job_dir(job_id) / "train.log"
    outcome = run_ranks(command, link, lambda: _tail(log_path))
    return Outcome(**outcome)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def assign_gpus(spec: JobSpec, worker_gpus: int) -> GpuPlan:
    """Split the worker's GPUs between training and vLLM, and show training only its own (before CUDA starts).

    The plan's indices count the GPUs the worker sees: a worker started with CUDA_VISIBLE_DEVICES=4,5 has GPUs 4
    and 5, so index 0 is device 4. The worker's own list is kept aside on the first call, so that a second call
    (the vLLM server's, then training's) maps through it again, not through training's narrower one.
    """
    training, vllm = gpu_plan(spec.resources, worker_gpus)
    if not worker_gpus:
        return GpuPlan([], [])
    seen = os.environ.setdefault(WORKER_DEVICES_ENV, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    devices = [d.strip() for d in seen.split(",") if d.strip()] or [str(i) for i in range(worker_gpus)]
    plan = GpuPlan([devices[i] for i in training], [devices[i] for i in vllm])
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(plan.training)
    return plan


def _start_vllm_server(
    settings: Settings, database: Database, job_id: str, spec: JobSpec, worker_gpus: int, cleanup: contextlib.ExitStack
) -> None:
    """Start the job's vLLM server (vllm_mode "server" with resources.vllm_gpus) on the GPUs the plan reserves for
    it, have `cleanup` stop it, and wait until it serves (worker/vllm_server.py)."""
    stage = "assigning the worker's GPUs"
    try:
        plan = assign_gpus(spec, worker_gpus)
        stage = "starting the vLLM server"
        server = start_for_job(spec, plan.vllm, settings, sys.stderr, _event_sink(database, job_id))
        if server is None:
            return
        cleanup.callback(server.stop)
        stage = "waiting for the vLLM server"
        server.wait_until_healthy(settings.vllm_start_timeout_seconds)
    except Exception as error:
        raise _stage_error(stage, error) from error


def _event_sink(database: Database, job_id: str) -> EventSink:
    """Events of the job, each in a session of its own (the vLLM server's output thread adds them)."""

    def add(kind: str, message: str, data: dict[str, Any]) -> None:
        with database.session() as session:
            add_event(session, job_id, kind, message, data)

    return add


def _train(
    settings: Settings,
    database: Database,
    job_id: str,
    attempt: int,
    link: WorkerLink | None,
    worker_gpus: int,
    cleanup: contextlib.ExitStack,
) -> Outcome:
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        if job is None:
            raise TrainingFailed(f"job {job_id} is not in the database")
        spec = JobSpec.model_validate(job.spec)
    # Each claim writes to a directory of its own: a worker that lost the job can never overwrite the files of
    # the one that took it over.
    attempt_dir = settings.job_dir(job_id) / f"attempt-{attempt}"

    def find_file(file_id: str) -> UploadedFile | None:
        with database.session() as session:
            return files.get_file(session, file_id)

    rank = is_rank_process()
    if not rank:  # the job's own process (a multi-process job's launcher) starts its vLLM server, if it has one
        _start_vllm_server(settings, database, job_id, spec, worker_gpus, cleanup)
    if spec.resources.process_count() > 1 and not rank:
        if link is None:
            raise TrainingFailed("a multi-process job needs the link to its worker")
        return _launch_ranks(settings, database, spec, job_id, attempt, link, worker_gpus)
    main = is_main_rank()
    stage = "assigning the worker's GPUs"
    try:  # each stage names itself in the error a user reads
        if not rank:  # a rank's launcher assigned them already
            assign_gpus(spec, worker_gpus)
        stage = "loading train_dataset"
        train_dataset = load_prompts(spec.train_dataset, "train_dataset", find_file)
        stage = "loading eval_dataset"
        eval_dataset = load_prompts(spec.eval_dataset, "eval_dataset", find_file) if spec.eval_dataset else None
        stage = "starting the reward functions"
        limits = SandboxLimits(
            settings.reward_timeout_seconds,
            settings.reward_memory_mb,
            require_kernel=settings.reward_require_kernel_sandbox,
        )
        rewards = build_reward_funcs(spec.reward_funcs, attempt_dir / "reward-sandbox", limits, sys.stderr)
        if main:
            _note_confinement(database, job_id, rewards)
        stage = "configuring GRPO (args)"
        config = build_config(spec, settings, attempt_dir)
        stage = "finding the model"
        check_model_reference(spec.model)
        stage = "finding the checkpoint to resume from"
        resume_from = _resume_point(database, job_id, attempt, main)
    except Exception as error:
        raise _stage_error(stage, error) from error
    try:
        return _run_trainer(
            settings,
            database,
            job_id,
            attempt,
            link,
            spec,
            config,
            train_dataset,
            eval_dataset,
            rewards,
            resume_from,
            attempt_dir,
        )
    finally:
        rewards.close()


def _run_trainer(
    settings: Settings,
    database: Database,
    job_id: str,
    attempt: int,
    link: WorkerLink | None,
    spec: JobSpec,
    config: GRPOConfig,
    train_dataset: Any,
    eval_dataset: Any,
    rewards: Rewards,
    resume_from: str | None,
    attempt_dir: Path,
) -> Outcome:
    writer = MetricsWriter(
        database,
        job_id,
        attempt,
        settings.effective_metrics_flush_interval,
        keep_sample_steps=settings.sample_steps_kept,
    )
    metrics = MetricsCallback(
        writer,
        database,
        job_id,
        attempt,
        settings.samples_per_step,
        settings.sample_max_chars,
        settings.sample_interval_seconds,
    )
    control = ControlCallback(link)
    # The service rotates checkpoints itself, after the database confirms the claim (see CheckpointCallback).
    checkpoints = CheckpointCallback(database, job_id, attempt, keep=config.save_total_limit)
    config.save_total_limit = None
    failure: TrainingFailed | None = None
    stage = f"loading model {spec.model!r}" + (" and adding its LoRA adapter (peft_config)" if spec.peft_config else "")
    try:
        trainer = GRPOTrainer(
            model=spec.model,
            reward_funcs=rewards.functions,
            args=config,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            callbacks=[metrics, control, checkpoints],
            peft_config=build_lora_config(spec),
        )
        metrics.trainer = trainer
        stage = "training"
        trainer.train(resume_from_checkpoint=resume_from)
        # A stop request honoured at a step end (one that came after the last step changes nothing).
        if control.stopped_at is not None:
            stage = "saving the checkpoint to stop at"
            writer.flush()  # the steps up to the checkpoint are stored before it is registered (see on_save)
            _ensure_checkpoint(trainer, checkpoints, control.stopped_at)
        else:
            stage = "saving the final model"
            _save_final_model(trainer, database, job_id, attempt, attempt_dir / "final-model")
    except Exception as error:
        failure = _stage_error(stage, error)
        failure.__cause__ = error
    # Every step logged before the end (or the failure) reaches the database.
    try:
        writer.close()
    except MetricsWriterFailed as error:
        if failure is None:
            raise _stage_error("storing metrics", error) from error
    if failure is not None:
        raise failure
    if control.stopped_at is not None:
        return Outcome(False, stopped_at_step=control.stopped_at)
    return Outcome(True, summary=metrics.summary)


def _ensure_checkpoint(trainer: GRPOTrainer, checkpoints: CheckpointCallback, step: int) -> None:
    """Make sure the step the run stopped at has a checkpoint (with save_strategy 'best', the trainer may have
    skipped it)."""
    if checkpoints.saved_at(step):
        return
    trainer._save_checkpoint(trainer.model, trial=None)  # the trainer's own full checkpoint (optimizer, RNG, ...)
    if is_main_rank():
        checkpoints.register(step, Path(str(trainer.args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{step}")


def _save_final_model(trainer: GRPOTrainer, database: Database, job_id: str, attempt: int, path: Path) -> None:
    trainer.save_model(str(path))  # every rank takes part (sharded models are gathered); rank 0 writes
    if not is_main_rank():
        return
    with database.session() as session:
        record_checkpoint(
            session,
            job_id,
            attempt,
            name=FINAL_MODEL,
            step=trainer.state.global_step,
            path=str(path),
            size_bytes=directory_size(path),
        )
