"""Filling a Postgres database with many jobs and metric points quickly (COPY), for the API-at-scale benchmark."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import psycopg

from tests.services import libpq_url

# What TRL 1.16 logs at each GRPO step (the keys, with typical magnitudes).
TRL_STEP_KEYS = [
    "loss",
    "grad_norm",
    "learning_rate",
    "num_tokens",
    "completions/mean_length",
    "completions/min_length",
    "completions/max_length",
    "completions/clipped_ratio",
    "completions/mean_terminated_length",
    "completions/min_terminated_length",
    "completions/max_terminated_length",
    "rewards/reward_len/mean",
    "rewards/reward_len/std",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
    "step_time",
]


def metrics_for(step: int, rng: random.Random) -> str:
    return json.dumps({key: round(rng.uniform(-5, 5), 6) for key in TRL_STEP_KEYS} | {"num_tokens": 196.0 * step})


def populate(url: str, jobs: int, points_per_job: int, seed: int = 0) -> list[str]:
    """Insert `jobs` succeeded jobs with `points_per_job` metric points each; returns the job ids."""
    rng = random.Random(seed)
    # A pool of realistic logs, reused: building a million distinct ones would dominate the set-up time.
    pool = [metrics_for(step, rng) for step in range(1, 1001)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job_ids = [f"job-{index:016x}" for index in range(jobs)]
    spec = json.dumps(
        {
            "model": "bench/tiny",
            "train_dataset": {"rows": [{"prompt": "p"}]},
            "reward_funcs": [{"type": "builtin", "name": "length"}],
            "args": {"max_steps": points_per_job},
        }
    )
    with psycopg.connect(libpq_url(url)) as connection, connection.cursor() as cursor:
        with cursor.copy(
            "COPY jobs (id, name, status, spec, created_at, started_at, finished_at, attempt, worker, total_steps, "
            "latest_step, latest_metrics) FROM STDIN"
        ) as copy:
            for index, job_id in enumerate(job_ids):
                created = start + timedelta(minutes=index)
                copy.write_row(
                    (
                        job_id,
                        f"bench {index}",
                        "succeeded",
                        spec,
                        created,
                        created,
                        created,
                        1,
                        "bench",
                        points_per_job,
                        points_per_job,
                        metrics_for(points_per_job, rng),
                    )
                )
        with cursor.copy("COPY metric_points (job_id, step, epoch, metrics, logged_at) FROM STDIN") as copy:
            for index, job_id in enumerate(job_ids):
                logged = start + timedelta(minutes=index)
                for step in range(1, points_per_job + 1):
                    copy.write_row((job_id, step, step / points_per_job, pool[step % len(pool)], logged))
        cursor.execute("ANALYZE")
    return job_ids
