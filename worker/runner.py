"""Builds and runs one `GRPOTrainer` for one job. Runs inside the job's training child process.

This module imports transformers and TRL (and with them torch) at the top on purpose: the worker's forkserver
preloads it, so every training child starts with them already imported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer

from sandbox.agent_sources import sandbox_environments, sandbox_tools
from sandbox.client import SandboxLimits
from shared.settings import Settings
from shared.spec.job import JobSpec
from shared.store import files, jobs
from shared.store.checkpoints import FINAL_MODEL, record_checkpoint
from shared.store.db import Database
from shared.store.events import add_event
from shared.store.models import UploadedFile
from worker.agents import build_environment_factory, build_tools, sandbox_counts
from worker.callbacks import CheckpointCallback, ControlCallback, directory_size
from worker.config import accelerate_mixed_precision, build_config
from worker.data import load_prompts
from worker.distributed import free_port, is_main_rank, is_rank_process, launch_command, run_ranks
from worker.failures import TrainingFailed, stage_error
from worker.gpus import assign_gpus
from worker.lora import build_lora_config
from worker.metrics import MetricsCallback, MetricsWriter, MetricsWriterFailed
from worker.model_paths import check_model_reference
from worker.protocol import Outcome, WorkerLink
from worker.resume import CheckpointOutOfReach, resume_point
from worker.rewards import Rewards, build_reward_funcs
from worker.vllm_server import start_for_job


@dataclass
class TrainingRun:
    """One claim (`attempt`) of one job, in the process that trains it: what every stage of the run reads."""

    settings: Settings
    database: Database
    job_id: str
    attempt: int
    # The pipe to the worker: in a multi-process job only its launcher and rank 0 have one.
    link: WorkerLink | None
    spec: JobSpec
    # Each claim writes to a directory of its own: a worker that lost the job can never overwrite the files of
    # the one that took it over.
    attempt_dir: Path
    worker_gpus: int  # 0: the worker trains on its CPU

    def add_event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Add an event to the job, in a session of its own (the vLLM server's output thread adds them too)."""
        with self.database.session() as session:
            add_event(session, self.job_id, kind, message, data)


@dataclass
class TrainerInputs:
    """What the trainer is built from, each prepared (and checked) in a stage of its own before the model loads."""

    config: GRPOConfig
    train_dataset: Dataset | None  # None: the environment owns the data
    eval_dataset: Dataset | None
    rewards: Rewards
    resume_from: str | None  # the checkpoint an earlier claim saved, or None to start over
    # The agent's tools and environments (worker/agents.py): stand-ins whose calls run in the rewards' sandbox.
    tools: list[Any] = field(default_factory=list)
    environment_factory: Any = None  # a class, or a dict of classes by name


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
        return _train(_load_run(settings, database, job_id, attempt, link, worker_gpus), cleanup)
    except TrainingFailed as failure:
        if isinstance(failure.__cause__, CheckpointOutOfReach):  # the work is kept: paused until it is in reach
            return Outcome(False, str(failure.__cause__), pause_because=str(failure.__cause__))
        return Outcome.failed(str(failure), "".join(traceback.format_exception(failure.__cause__ or failure)))
    except BaseException as error:  # anything unforeseen still ends the job with its reason
        return Outcome.failed(f"{type(error).__name__}: {error}", traceback.format_exc())
    finally:
        cleanup.close()


def _load_run(
    settings: Settings, database: Database, job_id: str, attempt: int, link: WorkerLink | None, worker_gpus: int
) -> TrainingRun:
    with database.session() as session:
        job = jobs.get_job(session, job_id)
        if job is None:
            raise TrainingFailed(f"job {job_id} is not in the database")
        spec = JobSpec.model_validate(job.spec)
    attempt_dir = settings.job_dir(job_id) / f"attempt-{attempt}"
    return TrainingRun(settings, database, job_id, attempt, link, spec, attempt_dir, worker_gpus)


def _train(run: TrainingRun, cleanup: contextlib.ExitStack) -> Outcome:
    rank = is_rank_process()
    if not rank:  # the job's own process (a multi-process job's launcher) starts its vLLM server, if it has one
        _note_secrets(run)
        _start_vllm_server(run, cleanup)
    if run.spec.resources.process_count() > 1 and not rank:
        if run.link is None:
            raise TrainingFailed("a multi-process job needs the link to its worker")
        return _launch_ranks(run, run.link)
    inputs = _prepare(run, assign_gpus_here=not rank)  # a rank's launcher assigned them already
    try:
        return _run_trainer(run, inputs)
    finally:
        _note_tool_calls(run, inputs)
        inputs.rewards.close()


def _note_tool_calls(run: TrainingRun, inputs: TrainerInputs) -> None:
    """Say what the sandbox itself counted of the tools it ran (beside TRL's tools/call_frequency)."""
    if not (inputs.tools or inputs.environment_factory) or not is_main_rank():
        return
    counts = sandbox_counts(inputs.rewards.sandbox)
    if counts is None:
        return
    total, failed = sum(counts["calls"].values()), sum(counts["failures"].values())
    run.add_event("info", f"the sandbox ran {total} tool call(s), {failed} of them raised", {"tool_calls": counts})


def _note_secrets(run: TrainingRun) -> None:
    """Tell the job's events which of its secrets this process has in its environment, as it sees them itself: by
    name only, never a value."""
    if not run.spec.secrets:
        return
    present = [name for name in run.spec.secrets if name in os.environ]
    missing = [name for name in run.spec.secrets if name not in os.environ]
    listed = ", ".join(present) or "none"
    message = f"secrets in the training process's environment (not the reward sandbox's): {listed}"
    if missing:
        message += f"; missing: {', '.join(missing)}"
    run.add_event("info", message, {"secrets": present, "missing_secrets": missing})


def _note_confinement(run: TrainingRun, rewards: Rewards) -> None:
    """Tell the job's events how its Python rewards are confined (it depends on the worker's kernel)."""
    confinement = rewards.sandbox.confinement if rewards.sandbox is not None else None
    if confinement is None:
        return
    run.add_event("info", f"reward sandbox started: {confinement.describe()}", asdict(confinement))


def _launch_ranks(run: TrainingRun, link: WorkerLink) -> Outcome:
    """Run the job's processes (`resources.processes`) and relay between them and the worker."""
    resources = run.spec.resources
    try:
        gpus = assign_gpus(run.spec, run.worker_gpus)
        command = launch_command(
            resources,
            run.job_id,
            run.attempt,
            on_gpus=bool(gpus.training),
            mixed_precision=accelerate_mixed_precision(run.spec.args, run.settings),
            port=free_port(),
        )
        print(f"launching {resources.process_count()} training processes: {' '.join(command)}", flush=True)
    except Exception as error:
        raise stage_error("launching the training processes", error) from error
    engine = "accelerate launch" if gpus.training else "torchrun (gloo, on the CPU)"
    run.add_event(
        "info",
        f"{resources.process_count()} training processes launched with {engine}"
        + (f", preset {resources.distributed or 'ddp'}" if gpus.training else ""),
        {"command": command, "gpus": gpus.training},
    )
    log_path = run.settings.job_dir(run.job_id) / "train.log"
    return run_ranks(command, link, lambda: _tail(log_path))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start_vllm_server(run: TrainingRun, cleanup: contextlib.ExitStack) -> None:
    """Start the job's vLLM server (vllm_mode "server" with resources.vllm_gpus) on the GPUs the plan reserves for
    it, have `cleanup` stop it, and wait until it serves (worker/vllm_server.py)."""
    stage = "assigning the worker's GPUs"
    try:
        plan = assign_gpus(run.spec, run.worker_gpus)
        stage = "starting the vLLM server"
        server = start_for_job(run.spec, plan.vllm, run.settings, sys.stderr, run.add_event)
        if server is None:
            return
        cleanup.callback(server.stop)
        stage = "waiting for the vLLM server"
        server.wait_until_healthy(run.settings.vllm_start_timeout_seconds)
    except Exception as error:
        raise stage_error(stage, error) from error


def _prepare(run: TrainingRun, assign_gpus_here: bool) -> TrainerInputs:
    """Everything the trainer needs but the model, in stages that each name themselves in the error a user reads."""
    settings, spec = run.settings, run.spec

    def find_file(file_id: str) -> UploadedFile | None:
        with run.database.session() as session:
            return files.get_file(session, file_id)

    main = is_main_rank()
    stage = "assigning the worker's GPUs"
    try:
        if assign_gpus_here:
            assign_gpus(spec, run.worker_gpus)
        stage = "loading train_dataset"
        train_dataset = load_prompts(spec.train_dataset, "train_dataset", find_file) if spec.train_dataset else None
        stage = "loading eval_dataset"
        eval_dataset = load_prompts(spec.eval_dataset, "eval_dataset", find_file) if spec.eval_dataset else None
        stage = "starting the reward functions"
        limits = SandboxLimits(
            settings.reward_timeout_seconds,
            settings.reward_memory_mb,
            require_kernel=settings.reward_require_kernel_sandbox,
        )
        stage = "starting the tools and environments" if spec.tools or spec.environment_factory else stage
        tools, environments = sandbox_tools(spec), sandbox_environments(spec)
        rewards = build_reward_funcs(
            spec.reward_funcs, run.attempt_dir / "reward-sandbox", limits, sys.stderr, tools, environments
        )
        if main:
            _note_confinement(run, rewards)
        agent_tools, environment_factory = [], None
        if rewards.sandbox is not None:
            agent_tools = build_tools(rewards.sandbox, spec)
            environment_factory = build_environment_factory(rewards.sandbox, spec)
        stage = "configuring GRPO (args)"
        config = build_config(spec, settings, run.attempt_dir)
        stage = "finding the model"
        check_model_reference(spec.model)
        stage = "finding the checkpoint to resume from"
        resume_from = resume_point(run.database, run.job_id, run.attempt, main)
    except Exception as error:
        raise stage_error(stage, error) from error
    return TrainerInputs(config, train_dataset, eval_dataset, rewards, resume_from, agent_tools, environment_factory)


def _run_trainer(run: TrainingRun, inputs: TrainerInputs) -> Outcome:
    settings, spec, config = run.settings, run.spec, inputs.config
    writer = MetricsWriter(
        run.database,
        run.job_id,
        run.attempt,
        settings.effective_metrics_flush_interval,
        keep_sample_steps=settings.sample_steps_kept,
    )
    metrics = MetricsCallback(
        writer,
        run.database,
        run.job_id,
        run.attempt,
        settings.samples_per_step,
        settings.sample_max_chars,
        settings.sample_interval_seconds,
    )
    control = ControlCallback(run.link)
    # The service rotates checkpoints itself, after the database confirms the claim (see CheckpointCallback).
    checkpoints = CheckpointCallback(run.database, run.job_id, run.attempt, keep=config.save_total_limit, writer=writer)
    config.save_total_limit = None
    failure: TrainingFailed | None = None
    stage = f"loading model {spec.model!r}" + (" and adding its LoRA adapter (peft_config)" if spec.peft_config else "")
    try:
        trainer = GRPOTrainer(
            model=spec.model,
            reward_funcs=inputs.rewards.functions,
            args=config,
            train_dataset=inputs.train_dataset,
            eval_dataset=inputs.eval_dataset,
            callbacks=[metrics, control, checkpoints],
            peft_config=build_lora_config(spec),
            tools=inputs.tools or None,
            environment_factory=inputs.environment_factory,
        )
        metrics.trainer = trainer
        stage = "training"
        trainer.train(resume_from_checkpoint=inputs.resume_from)
        # A stop request honoured at a step end (one that came after the last step changes nothing).
        if control.stopped_at is not None:
            stage = "saving the checkpoint to stop at"
            _ensure_checkpoint(trainer, checkpoints, control.stopped_at)
        else:
            stage = "saving the final model"
            _save_final_model(trainer, run)
    except Exception as error:
        failure = stage_error(stage, error)
        failure.__cause__ = error
        if is_main_rank():
            checkpoints.remove_partial(Path(str(config.output_dir)))
    # Every step logged before the end (or the failure) reaches the database.
    try:
        writer.close()
    except MetricsWriterFailed as error:
        if failure is None:
            raise stage_error("storing metrics", error) from error
    if failure is not None:
        raise failure
    if control.stopped_at is not None:
        return Outcome(False, stopped_at_step=control.stopped_at)
    return Outcome(True, summary=metrics.summary)


def _ensure_checkpoint(trainer: GRPOTrainer, checkpoints: CheckpointCallback, step: int) -> None:
    """Make sure the step the run stopped at has a checkpoint (with save_strategy 'best', the trainer may have
    skipped it); registering it stores the steps' metrics first (see CheckpointCallback)."""
    if checkpoints.saved_at(step):
        return
    # The trainer's own full checkpoint (optimizer, RNG, ...); TRL leaves the method untyped.
    save_checkpoint: Callable[..., None] = trainer._save_checkpoint
    save_checkpoint(trainer.model, trial=None)
    if is_main_rank():
        checkpoints.register(step, Path(str(trainer.args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{step}")


def _save_final_model(trainer: GRPOTrainer, run: TrainingRun) -> None:
    path = run.attempt_dir / "final-model"
    trainer.save_model(str(path))  # every rank takes part (sharded models are gathered); rank 0 writes
    if not is_main_rank():
        return
    with run.database.session() as session:
        record_checkpoint(
            session,
            run.job_id,
            run.attempt,
            name=FINAL_MODEL,
            step=trainer.state.global_step,
            path=str(path),
            size_bytes=directory_size(path),
        )
