"""What every benchmark needs: percentiles, the tiny model, the servers, running services, a job spec."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from tests.processes import Service, base_env
from tests.services import libpq_url, postgres_admin_url, redis_url


@dataclass
class Sizes:
    """How big each benchmark runs: the full run, or a smoke run that only shows the code still works."""

    training_steps: int
    repetitions: int
    dispatch_jobs: int
    back_to_back_jobs: int
    latency_steps: int
    scale_jobs: int
    scale_points_per_job: int
    load_seconds: int
    ingest_points: int
    memory_jobs: int
    series_points: int


FULL = Sizes(
    training_steps=100,
    repetitions=3,
    dispatch_jobs=50,
    back_to_back_jobs=10,
    latency_steps=300,
    scale_jobs=1000,
    scale_points_per_job=1000,
    load_seconds=10,
    ingest_points=100_000,
    memory_jobs=20,
    series_points=100_000,
)
SMOKE = Sizes(
    training_steps=5,
    repetitions=1,
    dispatch_jobs=3,
    back_to_back_jobs=3,
    latency_steps=10,
    scale_jobs=20,
    scale_points_per_job=50,
    load_seconds=1,
    ingest_points=500,
    memory_jobs=2,
    series_points=3000,
)


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0.5 = median) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations, in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 2),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 2),
    }


def parse_time(value: str) -> float:
    """An API timestamp (ISO 8601, Z) as a Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh Postgres database for one benchmark, dropped afterwards."""
    admin = postgres_admin_url()
    name = f"grpo_bench_{secrets.token_hex(5)}"
    with psycopg.connect(libpq_url(admin), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(libpq_url(admin), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def embedded_service(work: Path) -> Iterator[Service]:
    """`grpo up` (SQLite + SQLite broker) with its worker ready."""
    work.mkdir(parents=True, exist_ok=True)
    service = Service(base_env(work / "data"), work)
    try:
        service.start_api("up").wait_for_log("ready.")
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def production_service(work: Path, with_worker: bool = True) -> Iterator[Service]:
    """`grpo migrate` + `grpo serve` (+ `grpo worker`) on a fresh Postgres database and Redis."""
    work.mkdir(parents=True, exist_ok=True)
    with postgres_database() as database_url:
        env = base_env(
            work / "data", database_url=database_url, broker_url=redis_url(), queue=f"bench-{secrets.token_hex(4)}"
        )
        service = Service(env, work)
        try:
            migrate = service.start(["migrate"], "migrate")
            if migrate.process.wait(timeout=120) != 0:
                raise RuntimeError(migrate.log())
            service.start_api("serve")
            if with_worker:
                service.start_worker()
            yield service
        finally:
            service.stop()


def tiny_model(work: Path) -> Path:
    """The tiny model every benchmark trains (built once per run)."""
    path = work / "tiny-model"
    if not (path / "config.json").exists():
        from worker.tiny_model import build_tiny_model

        build_tiny_model(path)
    return path


def bench_job(model: Path, steps: int) -> dict[str, Any]:
    """The job every training benchmark runs: the seed's length reward, kl logged, fixed seed."""
    return {
        "name": "bench",
        "model": str(model),
        "train_dataset": {"rows": [{"prompt": p} for p in ("What is 2+2?", "Say hi.", "Tell me a story.", "Why?")]},
        "reward_funcs": [{"type": "builtin", "name": "length", "params": {"ideal_length": 10}}],
        "args": {
            "max_steps": steps,
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "max_completion_length": 16,
            "learning_rate": 1e-3,
            "beta": 0.04,
            "logging_steps": 1,
            "gradient_checkpointing": False,
            "save_strategy": "no",
            "seed": 0,
        },
    }


def wait_finished(service: Service, job_id: str, poll: float = 0.02, timeout: float = 600) -> dict[str, Any]:
    """Poll until the job ends; returns it (raises if it did not succeed)."""
    deadline = time.monotonic() + timeout
    while True:
        job = service.job(job_id)
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"benchmark job {job_id} {job['status']}: {job['error']}\n{service.logs()}")
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark job {job_id} still {job['status']} after {timeout}s")
        time.sleep(poll)


def ensure_wrk() -> str:
    """The `wrk` load generator, installed from Debian's packages when missing and allowed."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError(
            "the API benchmark needs wrk: install it (Debian/Ubuntu: apt install wrk; macOS: brew install wrk)"
        )
    return found
